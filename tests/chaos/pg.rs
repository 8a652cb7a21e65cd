//! A throwaway PostgreSQL the test owns, so it can restart it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL cluster in a temporary directory, stopped when dropped.
pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
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

impl Pg {
    /// initdb and start one (as user `postgres`, on a port below the
    /// ephemeral range); `Err` says why it cannot.
    pub fn start() -> Result<Self, String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("no PostgreSQL installed (/usr/lib/postgresql: {e})"))?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max_by_key(|b| {
                b.parent()
                    .and_then(Path::file_name)
                    .and_then(|v| v.to_str()?.parse::<u32>().ok())
                    .unwrap_or(0)
            })
            .ok_or("no initdb under /usr/lib/postgresql/*/bin")?;
        let dir = tempfile::Builder::new()
            .prefix("brigade-chaos-pg")
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
    pub fn restart_immediate(&self) {
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
        .unwrap();
    }

    /// Clean stop (fast: sessions are terminated).
    pub fn stop(&self) {
        self.ctl(&["stop", "-m", "fast", "-w"]).unwrap();
    }

    /// Start after [`Pg::stop`].
    pub fn start_again(&self) {
        self.ctl(&["start", "-w", "-t", "60", "-o", &self.options()])
            .unwrap();
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
