//! PostgreSQL for tests: the server a test pass is pointed at, a fresh
//! database on it for each test, and a throwaway server when none answers.
//!
//! `BRIGADE_TEST_POSTGRES` names the server (an admin URL such as
//! `postgres://postgres@127.0.0.1:5432/postgres`). When it does not answer,
//! [`Postgres::at`] starts a throwaway one (`initdb` and `pg_ctl` as user
//! `postgres` in a temp dir, as scripts/test.sh does) that lives as long as
//! the handle, so no test depends on a server being set up beforehand.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use sqlx::Connection;

/// The server a PostgreSQL test pass uses when `BRIGADE_TEST_POSTGRES` is unset.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The admin URL the PostgreSQL pass of the suite is pointed at
/// (`BRIGADE_TEST_POSTGRES`), or `None` in the SQLite pass.
pub fn requested() -> Option<String> {
    std::env::var("BRIGADE_TEST_POSTGRES")
        .ok()
        .filter(|v| !v.is_empty())
}

/// Whether PostgreSQL tests may be skipped when no server can be had
/// (`BRIGADE_SKIP_POSTGRES=1`).
pub fn skip_allowed() -> bool {
    std::env::var("BRIGADE_SKIP_POSTGRES").as_deref() == Ok("1")
}

/// A PostgreSQL server to make test databases on: one that answered, or a
/// throwaway one started for this handle (stopped when the last clone goes).
#[derive(Clone)]
pub struct Postgres {
    admin: String,
    throwaway: Option<Arc<Pg>>,
}

impl Postgres {
    /// The server at `admin` if it answers; otherwise a throwaway one.
    /// `Err` says why neither could be had.
    pub async fn at(admin: &str) -> Result<Self, String> {
        match sqlx::PgConnection::connect(admin).await {
            Ok(conn) => {
                let _ = conn.close().await;
                Ok(Self {
                    admin: admin.to_owned(),
                    throwaway: None,
                })
            }
            Err(e) => {
                let pg = Pg::start().map_err(|why| {
                    format!(
                        "PostgreSQL at {admin} does not answer ({e}), and a throwaway one \
                         cannot be started: {why}"
                    )
                })?;
                eprintln!(
                    "note: PostgreSQL at {admin} does not answer ({e}); using a throwaway one on port {}",
                    pg.port
                );
                Ok(Self {
                    admin: pg.url("postgres"),
                    throwaway: Some(Arc::new(pg)),
                })
            }
        }
    }

    /// `BRIGADE_TEST_POSTGRES` (default [`DEFAULT_ADMIN_URL`]), or a throwaway
    /// server when it does not answer.
    pub async fn for_tests() -> Result<Self, String> {
        Self::at(&requested().unwrap_or_else(|| DEFAULT_ADMIN_URL.to_owned())).await
    }

    /// The throwaway server, when one had to be started (a test may restart it).
    pub fn throwaway(&self) -> Option<&Pg> {
        self.throwaway.as_deref()
    }

    /// The admin URL (database `postgres`) of this server.
    pub fn admin_url(&self) -> &str {
        &self.admin
    }

    /// A new, empty database with a unique name, dropped when the returned
    /// handle goes away.
    pub async fn create_database(&self) -> Result<TestDatabase, String> {
        let name = format!("brigade_t_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&self.admin)
            .await
            .map_err(|e| format!("PostgreSQL at {} does not answer: {e}", self.admin))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        let _ = conn.close().await;
        Ok(TestDatabase {
            url: with_database(&self.admin, &name),
            name,
            server: self.clone(),
        })
    }
}

/// A database of one test; dropped (`WITH (FORCE)`) when this goes away.
pub struct TestDatabase {
    /// Its URL, for `brigade server --database-url` or a store.
    pub url: String,
    name: String,
    server: Postgres,
}

impl TestDatabase {
    /// A fresh database on the server of the PostgreSQL pass
    /// ([`Postgres::for_tests`]). `Ok(None)` when none can be had and
    /// `BRIGADE_SKIP_POSTGRES=1` allows skipping (a note says so).
    pub async fn create() -> Result<Option<Self>, String> {
        match Postgres::for_tests().await {
            Ok(pg) => pg.create_database().await.map(Some),
            Err(why) if skip_allowed() => {
                eprintln!("skipped: {why}");
                Ok(None)
            }
            Err(why) => Err(format!(
                "{why}. Start one, point BRIGADE_TEST_POSTGRES at it, or set \
                 BRIGADE_SKIP_POSTGRES=1 to skip"
            )),
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server it lives on.
    pub fn server(&self) -> &Postgres {
        &self.server
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.server.admin.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("note: could not drop test database {}", self.name);
        }
    }
}

/// `url` with its database replaced by `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A PostgreSQL cluster in a temporary directory that the test owns, so it
/// can also restart it; stopped when dropped.
pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The newest PostgreSQL's `bin` directory (Debian layout).
fn pg_bin() -> Result<PathBuf, String> {
    std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL installed (/usr/lib/postgresql: {e})"))?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .max_by_key(|b| {
            b.parent()
                .and_then(Path::file_name)
                .and_then(|v| v.to_str()?.parse::<u32>().ok())
                .unwrap_or(0)
        })
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_owned())
}

impl Pg {
    /// `initdb` and start one (as user `postgres`, on a port below the
    /// ephemeral range); `Err` says why it cannot.
    pub fn start() -> Result<Self, String> {
        let bin = pg_bin()?;
        if Command::new("id")
            .arg("postgres")
            .output()
            .map_or(true, |o| !o.status.success())
        {
            run(Command::new("useradd")
                .args(["--system", "--home", "/var/lib/postgresql"])
                .arg("postgres"))?;
        }
        let dir = tempfile::Builder::new()
            .prefix("brigade-test-pg")
            .tempdir()
            .map_err(|e| e.to_string())?;
        run(Command::new("chown").arg("postgres").arg(dir.path()))?;
        let data = dir.path().join("data");
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres"]))?;
        let mut pg = Pg { dir, bin, port: 0 };
        let mut last = String::from("every port tried was taken");
        // Below the ephemeral range (32768+), clear of test.sh's 25432.
        let base = 27000 + (std::process::id() % 2000) as u16;
        for port in base..base + 20 {
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            pg.port = port;
            match pg.ctl(&["start", "-w", "-t", "60", "-o", &pg.options()]) {
                Ok(()) => return Ok(pg),
                Err(e) => last = format!("{e}\n{}", pg.log()),
            }
        }
        Err(format!("PostgreSQL would not start: {last}"))
    }

    fn options(&self) -> String {
        format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        )
    }

    fn ctl(&self, args: &[&str]) -> Result<(), String> {
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(args))
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Crash-restart: every backend killed, recovery from the WAL.
    pub fn restart_immediate(&self) -> Result<(), String> {
        self.ctl(&[
            "restart",
            "-m",
            "immediate",
            "-w",
            "-t",
            "60",
            "-o",
            &self.options(),
        ])
    }

    /// Clean stop (fast: sessions are terminated).
    pub fn stop(&self) -> Result<(), String> {
        self.ctl(&["stop", "-m", "fast", "-w"])
    }

    /// Start after [`Pg::stop`].
    pub fn start_again(&self) -> Result<(), String> {
        self.ctl(&["start", "-w", "-t", "60", "-o", &self.options()])
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop", "-m", "immediate"]);
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_replaces_only_the_database() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
