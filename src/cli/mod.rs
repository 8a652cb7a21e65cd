//! The client commands and what they share: global options, the client,
//! error advice, output. The command line as a whole (`Cli`) is `crate::command`'s;
//! nothing here depends on it, on `up` or on `bench`.

pub mod limits;
pub mod logs;
pub mod ops;
pub mod run;
pub mod schedule;
pub mod server;
pub mod status;
pub mod submit;
pub mod watch;
pub mod worker;

use clap::{Args, Subcommand, ValueEnum};

/// Options of every client command.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Server URL; several, comma-separated, are tried in turn.
    #[arg(
        long,
        global = true,
        env = "BRIGADE_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    pub server: String,
    /// API token.
    #[arg(long, global = true, env = "BRIGADE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Trust this CA certificate (PEM) for https:// servers (e.g. a self-signed server).
    #[arg(long, global = true, env = "BRIGADE_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// More logging (-v, -vv).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Output format of client commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

/// `brigade token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new random secret; prints it once and the auth-file entry holding only its hash.
    Create {
        /// Token name: owns the jobs and workers made with it.
        #[arg(long)]
        name: String,
        /// admin, client or worker.
        #[arg(long)]
        role: brigade_server::auth::Role,
    },
}

/// Run a token command.
pub fn token(cmd: &TokenCommand, output: Output) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { name, role } => {
            anyhow::ensure!(
                !name.is_empty() && name.len() <= 128 && !name.contains(['"', '\\', '\n']),
                "--name must be 1 to 128 characters without quotes, backslashes or newlines"
            );
            let (secret, hash) = brigade_server::auth::generate_secret();
            let entry = format!(
                "[[token]]\nname = \"{name}\"\nrole = \"{}\"\nsecret_hash = \"{hash}\"\n",
                role.as_str()
            );
            match output {
                Output::Json => print_json(&serde_json::json!({
                    "name": name, "role": role.as_str(), "secret": secret,
                    "secret_hash": hash, "toml": entry,
                }))?,
                Output::Text => {
                    println!("secret (shown once; give it to the token's user as BRIGADE_TOKEN):");
                    println!("  {secret}");
                    println!();
                    println!("add to the server's auth file:");
                    print!("{entry}");
                }
            }
            Ok(())
        }
    }
}

/// A client for the global options.
pub fn client(global: &Global) -> anyhow::Result<brigade_client::Client> {
    Ok(brigade_client::Client::with_options(
        &global.server,
        global.token.clone(),
        client_options(global.ca_cert.as_deref())?,
    )?)
}

/// Client options for an optional `--ca-cert` file.
pub fn client_options(
    ca_cert: Option<&std::path::Path>,
) -> anyhow::Result<brigade_client::ClientOptions> {
    Ok(match ca_cert {
        Some(p) => brigade_client::ClientOptions::with_ca_cert_file(p)?,
        None => brigade_client::ClientOptions::default(),
    })
}

/// Turn a client error into advice.
pub fn explain(e: brigade_client::ClientError) -> anyhow::Error {
    use brigade_client::ClientError;
    match &e {
        ClientError::Unreachable { url, .. } => anyhow::anyhow!(
            "{e}\n  Is a server running there? Start one with `brigade up` (or `brigade server`), \
             or point --server / BRIGADE_SERVER at it (tried {url})."
        ),
        ClientError::Api { status, .. } if status.as_u16() == 401 => {
            anyhow::anyhow!("{e}\n  Pass a token with --token or BRIGADE_TOKEN.")
        }
        ClientError::Api { status, .. } if status.as_u16() == 404 => {
            anyhow::anyhow!(
                "{e}\n  Check the id; `brigade status` takes a job id as printed by `brigade submit`."
            )
        }
        ClientError::Api { problem, .. } if !problem.errors.is_empty() => {
            let fields: Vec<String> = problem
                .errors
                .iter()
                .map(|f| format!("  - {}: {}", f.field, f.message))
                .collect();
            anyhow::anyhow!("{e}\n{}", fields.join("\n"))
        }
        _ => anyhow::Error::new(e),
    }
}

/// Print `value` as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
