//! `brigade.toml`: every option of `brigade server` and `brigade worker` in a file.
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:7070"
//! database_url = "postgres://brigade@db/brigade"
//! retention = "3d"
//! callback_allow = ["hooks.example.com"]
//!
//! [worker]
//! server = "http://10.0.0.5:7070"
//! capacity = 16
//! queues = ["default", "images"]
//! ```
//!
//! The keys are the options' long names (`lease_ttl_ms` or `lease-ttl-ms`).
//! The file is `--config FILE`, else `$BRIGADE_CONFIG`, else `brigade.toml`
//! in the working directory when there is one. Precedence, highest first:
//! the command line, the environment, the file, the defaults. The file's
//! values are handed to the same parser as the command line's, so they are
//! checked the same way; an unknown section or key is an error naming it.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// Sections the file may hold: the commands that read it.
const SECTIONS: &[&str] = &["server", "worker"];

/// Options that say where the file is or what to do with it, not what to run.
const NOT_IN_FILE: &[&str] = &["config", "print_config", "help", "version"];

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not TOML.
    #[error("{path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's words.
        message: String,
    },
    /// It holds something no option matches.
    #[error("{path}: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// What a file gave the command line.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The file read, `None` when there was none.
    pub path: Option<PathBuf>,
    /// Ids of the options it set (those the command line and environment left unset).
    pub set: BTreeSet<String>,
}

/// The subcommand of `args` that reads a file, and where it stands.
fn subcommand(args: &[OsString], cli: &clap::Command) -> Option<(usize, String)> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--" {
            return None;
        }
        if let Some(flag) = a.strip_prefix("--") {
            // A global option that takes a value, given as two arguments, skips both.
            let takes = !flag.contains('=')
                && cli
                    .get_arguments()
                    .any(|arg| arg.get_long() == Some(flag) && arg.get_action().takes_values());
            i += if takes { 2 } else { 1 };
            continue;
        }
        if a.starts_with('-') {
            let takes = a.len() == 2
                && cli.get_arguments().any(|arg| {
                    arg.get_short().is_some_and(|s| a.ends_with(s))
                        && arg.get_action().takes_values()
                });
            i += if takes { 2 } else { 1 };
            continue;
        }
        return SECTIONS.contains(&a.as_ref()).then(|| (i, a.into_owned()));
    }
    None
}

/// The value of `--config` among `args`, if given there.
fn config_flag(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// Whether the command line names `arg` itself.
fn given(args: &[OsString], arg: &clap::Arg) -> bool {
    args.iter().any(|a| {
        let s = a.to_string_lossy();
        arg.get_long()
            .is_some_and(|l| s == format!("--{l}") || s.starts_with(&format!("--{l}=")))
            || arg.get_short().is_some_and(|c| s == format!("-{c}"))
    })
}

/// A TOML scalar as an argument.
fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// The arguments one key of the file stands for.
fn arguments(arg: &clap::Arg, key: &str, v: &toml::Value) -> Result<Vec<OsString>, String> {
    let long = arg
        .get_long()
        .ok_or_else(|| format!("`{key}` has no long option"))?;
    let flag = OsString::from(format!("--{long}"));
    if !arg.get_action().takes_values() {
        return match v {
            toml::Value::Boolean(true) => Ok(vec![flag]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            _ => Err(format!("`{key}` is a switch: write true or false")),
        };
    }
    match v {
        toml::Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                let s =
                    scalar(item).ok_or_else(|| format!("`{key}`: nested lists are not options"))?;
                out.push(flag.clone());
                out.push(OsString::from(s));
            }
            Ok(out)
        }
        toml::Value::Table(_) => Err(format!("`{key}` is an option, not a section")),
        other => Ok(vec![
            flag,
            OsString::from(scalar(other).unwrap_or_default()),
        ]),
    }
}

/// Read the file for the command of `args`, if any, and put its values into
/// the command line (before the arguments given there); what it set.
pub fn expand(
    args: Vec<OsString>,
    cli: &clap::Command,
) -> Result<(Vec<OsString>, Loaded), ConfigError> {
    let Some((at, name)) = subcommand(&args, cli) else {
        return Ok((args, Loaded::default()));
    };
    let explicit = config_flag(&args[at..]).or_else(|| {
        std::env::var_os("BRIGADE_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let path = match explicit {
        Some(p) => p,
        None if Path::new("brigade.toml").is_file() => PathBuf::from("brigade.toml"),
        None => return Ok((args, Loaded::default())),
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let mut loaded = Loaded {
        path: Some(path.clone()),
        set: BTreeSet::new(),
    };
    let extra = apply(&text, &path, &name, &args[at..], cli, &mut loaded)?;
    let mut out = args;
    out.splice(at + 1..at + 1, extra);
    Ok((out, loaded))
}

/// The arguments the file's section `name` stands for, skipping options
/// that `given` (the command line) or the environment set.
fn apply(
    text: &str,
    path: &Path,
    name: &str,
    given_args: &[OsString],
    cli: &clap::Command,
    loaded: &mut Loaded,
) -> Result<Vec<OsString>, ConfigError> {
    let key_error = |message: String| ConfigError::Key {
        path: path.to_owned(),
        message,
    };
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
    for (k, v) in &doc {
        if !SECTIONS.contains(&k.as_str()) || !v.is_table() {
            return Err(key_error(format!(
                "`{k}` is not a section; the file holds [server] and [worker]"
            )));
        }
    }
    let Some(section) = doc.get(name).and_then(toml::Value::as_table) else {
        return Ok(Vec::new());
    };
    let sub = cli
        .find_subcommand(name)
        .ok_or_else(|| key_error(format!("no command `{name}`")))?;
    let mut extra = Vec::new();
    for (key, value) in section {
        let id = key.replace('-', "_");
        let arg = sub
            .get_arguments()
            .find(|a| a.get_id().as_str() == id && !NOT_IN_FILE.contains(&id.as_str()))
            .ok_or_else(|| {
                key_error(format!(
                    "[{name}] has no option `{key}` (`brigade {name} --help` lists them)"
                ))
            })?;
        if given(given_args, arg) {
            continue;
        }
        if arg
            .get_env()
            .is_some_and(|var: &OsStr| std::env::var_os(var).is_some())
        {
            continue;
        }
        extra.extend(arguments(arg, key, value).map_err(|m| key_error(format!("[{name}] {m}")))?);
        loaded.set.insert(id);
    }
    Ok(extra)
}

/// A value as TOML: numbers and booleans bare, the rest quoted.
fn toml_value(raw: &str) -> String {
    if raw.parse::<i64>().is_ok() || raw == "true" || raw == "false" {
        raw.to_owned()
    } else {
        toml::Value::String(raw.to_owned()).to_string()
    }
}

/// The configuration `brigade NAME` runs with, as a file it could read,
/// each value with where it came from; secrets are not shown.
pub fn render(cli: &clap::Command, args: &[OsString], name: &str, loaded: &Loaded) -> String {
    let mut out = String::new();
    let from = loaded
        .path
        .as_ref()
        .map_or_else(|| "no file".to_owned(), |p| format!("file {}", p.display()));
    out.push_str(&format!(
        "# brigade {name}: the configuration in effect ({from}; command line > environment > file > default)\n[{name}]\n"
    ));
    let matches = match cli.clone().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => return format!("{out}# cannot parse the command line: {e}\n"),
    };
    let Some(sub) = matches.subcommand_matches(name) else {
        return out;
    };
    let Some(cmd) = cli.find_subcommand(name) else {
        return out;
    };
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if NOT_IN_FILE.contains(&id) || arg.is_hide_set() {
            continue;
        }
        let source = match sub.value_source(id) {
            Some(clap::parser::ValueSource::CommandLine) if loaded.set.contains(id) => "file",
            Some(clap::parser::ValueSource::CommandLine) => "command line",
            Some(clap::parser::ValueSource::EnvVariable) => "environment",
            Some(clap::parser::ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let raw: Vec<String> = sub
            .get_raw(id)
            .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let value = if arg.is_hide_env_values_set() && !raw.is_empty() {
            "\"<hidden>\"".to_owned()
        } else if !arg.get_action().takes_values() {
            (source != "default" && source != "unset").to_string()
        } else if raw.is_empty() {
            out.push_str(&format!("# {id} = (unset)\n"));
            continue;
        } else if arg.get_num_args().is_some_and(|n| n.max_values() > 1)
            || arg.get_value_delimiter().is_some()
            || matches!(arg.get_action(), clap::ArgAction::Append)
        {
            format!(
                "[{}]",
                raw.iter()
                    .flat_map(|r| match arg.get_value_delimiter() {
                        Some(d) => r.split(d).map(str::to_owned).collect::<Vec<_>>(),
                        None => vec![r.clone()],
                    })
                    .map(|r| toml::Value::String(r).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            toml_value(&raw[0])
        };
        out.push_str(&format!("{id} = {value}  # {source}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn cli() -> Command {
        Command::new("brigade")
            .arg(Arg::new("output").long("output").short('o').global(true))
            .subcommand(
                Command::new("server")
                    .arg(
                        Arg::new("listen")
                            .long("listen")
                            .default_value("127.0.0.1:7070"),
                    )
                    .arg(
                        Arg::new("lease_ttl_ms")
                            .long("lease-ttl-ms")
                            .env("BRIGADE_TEST_CONFIG_TTL"),
                    )
                    .arg(
                        Arg::new("insecure")
                            .long("insecure")
                            .action(ArgAction::SetTrue),
                    )
                    .arg(
                        Arg::new("callback_allow")
                            .long("callback-allow")
                            .value_delimiter(','),
                    ),
            )
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn run(text: &str, args: &[&str]) -> Result<Vec<String>, ConfigError> {
        let args = os(args);
        let mut loaded = Loaded::default();
        let (at, name) = subcommand(&args, &cli()).ok_or_else(|| ConfigError::Key {
            path: "t".into(),
            message: "no subcommand".into(),
        })?;
        let extra = apply(
            text,
            Path::new("t.toml"),
            &name,
            &args[at..],
            &cli(),
            &mut loaded,
        )?;
        Ok(extra
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect())
    }

    #[test]
    fn the_file_fills_what_the_command_line_leaves() -> Result<(), ConfigError> {
        let text = "[server]\nlisten = \"0.0.0.0:1\"\nlease-ttl-ms = 900\ninsecure = true\ncallback_allow = [\"a\", \"b\"]\n";
        assert_eq!(
            run(text, &["brigade", "-o", "json", "server"])?,
            [
                "--callback-allow",
                "a",
                "--callback-allow",
                "b",
                "--insecure",
                "--lease-ttl-ms",
                "900",
                "--listen",
                "0.0.0.0:1"
            ]
        );
        // A flag on the command line wins: the file's value is left out.
        let got = run(text, &["brigade", "server", "--listen=127.0.0.1:2"])?;
        assert!(!got.contains(&"--listen".to_owned()), "{got:?}");
        Ok(())
    }

    #[test]
    fn unknown_keys_and_sections_are_errors_naming_them() {
        for (text, word) in [
            ("[server]\nlease_tll_ms = 1\n", "lease_tll_ms"),
            ("[sever]\nlisten = \"x\"\n", "sever"),
            ("listen = \"x\"\n", "listen"),
            ("[server]\ninsecure = 1\n", "insecure"),
            ("[server]\nconfig = \"x\"\n", "config"),
        ] {
            match run(text, &["brigade", "server"]) {
                Err(e) => assert!(e.to_string().contains(word), "{e}"),
                Ok(v) => panic!("{text:?} accepted: {v:?}"),
            }
        }
        assert!(matches!(
            run("[server\n", &["brigade", "server"]),
            Err(ConfigError::Syntax { .. })
        ));
    }

    #[test]
    fn other_commands_read_no_file() {
        let args = os(&["brigade", "submit", "--kind", "noop"]);
        assert!(subcommand(&args, &cli()).is_none());
    }
}
