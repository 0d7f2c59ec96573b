//! `--config streamstock.toml`: settings from a file, beneath the command
//! line and the environment. Precedence: flags > environment > file >
//! built-in defaults.
//!
//! The file's keys are the long flag names, so everything
//! docs/configuration.md lists can go in it. Top-level keys apply to every command
//! that has the flag; a table named after a command applies to it alone:
//!
//! ```toml
//! valkey-url = "redis://10.0.0.5:6379"
//! database-url = "postgres://streamstock@10.0.0.6/streamstock"
//! database-password-file = "/etc/streamstock/db-password"
//! startup-timeout = "2m"
//!
//! [serve]
//! listen = "0.0.0.0:8000"
//! api-token-file = "/etc/streamstock/token"
//!
//! [worker]
//! worker-listen = "127.0.0.1:8101"
//! ```
//!
//! A flag every command shares (`partitions`, `database-url`, …) set inside
//! a command's table applies to every command, as it would at the top.
//!
//! How: each value the file gives becomes that flag's default before the
//! command line is parsed, so clap's own order (flag, then environment, then
//! default) does the rest. A key no command knows is an error, not a silent
//! typo.

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The flag naming the file, and its environment variable.
pub const FLAG: &str = "config";
pub const ENV: &str = "STREAMSTOCK_CONFIG";

/// Settings read from a file: flag name → value, for every command
/// (`None`) or one (`Some(command)`).
#[derive(Debug, Default, Clone)]
pub struct FileSettings {
    pub path: Option<PathBuf>,
    values: BTreeMap<(Option<String>, String), String>,
}

impl FileSettings {
    /// The file named by `--config` in `args`, or by STREAMSTOCK_CONFIG;
    /// empty settings when neither names one.
    pub fn locate_and_read(args: &[OsString]) -> Result<FileSettings, String> {
        match config_path(args) {
            Some(path) => FileSettings::read(&path),
            None => Ok(FileSettings::default()),
        }
    }

    pub fn read(path: &Path) -> Result<FileSettings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
        let mut settings = FileSettings::parse(&text)
            .map_err(|e| format!("config file {}: {e}", path.display()))?;
        settings.path = Some(path.to_path_buf());
        Ok(settings)
    }

    fn parse(text: &str) -> Result<FileSettings, String> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        let mut values = BTreeMap::new();
        for (key, value) in table {
            match value {
                toml::Value::Table(section) => {
                    for (flag, value) in section {
                        let text = scalar(&flag, value)?;
                        values.insert((Some(key.clone()), flag), text);
                    }
                }
                value => {
                    let text = scalar(&key, value)?;
                    values.insert((None, key), text);
                }
            }
        }
        Ok(FileSettings { path: None, values })
    }

    /// Whether the file set `flag` for `command`.
    pub fn sets(&self, command: &str, flag: &str) -> bool {
        self.values
            .contains_key(&(Some(command.to_string()), flag.to_string()))
            || self.values.contains_key(&(None, flag.to_string()))
    }

    /// `cli` with the file's values as the flags' defaults. Fails on a key
    /// that names no flag (of that command, for a command's table).
    pub fn apply(&self, mut cli: Command) -> Result<Command, String> {
        let mut unknown = Vec::new();
        for ((command, flag), value) in &self.values {
            let mut known = false;
            // Top-level flags (the global ones) and every command's own.
            if command.is_none() && has_flag(&cli, flag) {
                let id = flag_id(&cli, flag);
                cli = cli.mut_arg(id, |a| a.default_value(value.clone()));
                known = true;
            }
            let names: Vec<String> = cli
                .get_subcommands()
                .map(|c| c.get_name().to_string())
                .collect();
            for name in names {
                if command.as_deref().is_some_and(|c| c != name) {
                    continue;
                }
                let sub = cli.find_subcommand(&name).expect("listed above");
                if has_flag(sub, flag) {
                    let id = flag_id(sub, flag);
                    let value = value.clone();
                    cli = cli.mut_subcommand(&name, |c| c.mut_arg(id, |a| a.default_value(value)));
                    known = true;
                }
            }
            if command.is_some() && !known && has_flag(&cli, flag) {
                // A global flag inside a command's table: it still applies.
                let id = flag_id(&cli, flag);
                cli = cli.mut_arg(id, |a| a.default_value(value.clone()));
                known = true;
            }
            if !known {
                unknown.push(match command {
                    Some(command) => format!("`{flag}` in [{command}]"),
                    None => format!("`{flag}`"),
                });
            }
        }
        if unknown.is_empty() {
            Ok(cli)
        } else {
            Err(format!(
                "unknown setting {} (keys are the long flag names `streamstock --help` lists)",
                unknown.join(", ")
            ))
        }
    }
}

fn has_flag(command: &Command, flag: &str) -> bool {
    command.get_arguments().any(|a| a.get_long() == Some(flag))
}

fn flag_id(command: &Command, flag: &str) -> String {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(flag))
        .map(|a| a.get_id().to_string())
        .expect("checked by has_flag")
}

/// A TOML value as the text a flag would take.
fn scalar(key: &str, value: toml::Value) -> Result<String, String> {
    Ok(match value {
        toml::Value::String(s) => s,
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        // Lists are comma-separated on the command line (--cors-origin).
        toml::Value::Array(items) => items
            .into_iter()
            .map(|item| scalar(key, item))
            .collect::<Result<Vec<_>, _>>()?
            .join(","),
        other => return Err(format!("`{key}`: a {} is not a setting", other.type_str())),
    })
}

/// `--config PATH` or `--config=PATH` among `args`, else STREAMSTOCK_CONFIG.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let flag = format!("--{FLAG}");
    let prefix = format!("--{FLAG}=");
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == flag {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix(&prefix) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(ENV).map(PathBuf::from)
}

/// Where an effective value came from, for `streamstock config`.
fn source_of(
    matches: &ArgMatches,
    id: &str,
    file: &FileSettings,
    command: &str,
    flag: &str,
) -> &'static str {
    match matches.value_source(id) {
        Some(ValueSource::CommandLine) => "flag",
        Some(ValueSource::EnvVariable) => "environment",
        Some(ValueSource::DefaultValue) if file.sets(command, flag) => "file",
        Some(ValueSource::DefaultValue) => "default",
        _ => "unset",
    }
}

/// The roles whose settings `streamstock config` shows.
const ROLES: [&str; 4] = ["all", "serve", "worker", "simulate"];

/// What `streamstock config` prints: every role's effective settings as a
/// config file, each with where it came from, secrets masked. `args` is the
/// command line that named `config`; the roles are parsed from it as if
/// each were named in its place.
pub fn effective(args: &[OsString], cli: Command) -> Result<String, String> {
    let file = FileSettings::locate_and_read(args)?;
    // Listed in the order the flags are declared: the file's values, set as
    // defaults, would otherwise move its flags to the end.
    let declared = cli.clone();
    let cli = file.apply(cli)?;
    let at = args
        .iter()
        .position(|a| a == "config")
        .ok_or("`config` not found on the command line")?;
    let mut out = String::from(
        "# The effective settings of each role, as a config file (keys are the long flag\n\
         # names). Precedence: flag > environment > file > default; secrets masked.\n",
    );
    match &file.path {
        Some(path) => out.push_str(&format!("# config file: {}\n", path.display())),
        None => out.push_str("# config file: none (--config / STREAMSTOCK_CONFIG)\n"),
    }
    let mut globals_done = false;
    for role in ROLES {
        let mut role_args = args.to_vec();
        role_args[at] = OsString::from(role);
        let matches = cli
            .clone()
            .try_get_matches_from(&role_args)
            .map_err(|e| e.to_string())?;
        let sub = matches
            .subcommand_matches(role)
            .expect("parsed as this role");
        let command = declared.find_subcommand(role).expect("a role");
        let global_ids: Vec<&str> = declared
            .get_arguments()
            .filter(|a| a.is_global_set())
            .map(|a| a.get_id().as_str())
            .collect();
        if !globals_done {
            out.push('\n');
            for arg in declared.get_arguments().filter(|a| a.is_global_set()) {
                describe(&mut out, arg, sub, &file, role);
            }
            globals_done = true;
        }
        out.push_str(&format!("\n[{role}]\n"));
        for arg in command
            .get_arguments()
            .filter(|a| !global_ids.contains(&a.get_id().as_str()))
        {
            describe(&mut out, arg, sub, &file, role);
        }
    }
    Ok(out)
}

/// One setting's line: `key = "value"  # source`, or a comment if unset.
fn describe(
    out: &mut String,
    arg: &clap::Arg,
    matches: &ArgMatches,
    file: &FileSettings,
    role: &str,
) {
    let (Some(flag), false) = (arg.get_long(), arg.is_hide_set()) else {
        return;
    };
    if flag == FLAG {
        return;
    }
    let id = arg.get_id().as_str();
    let raw: Vec<String> = matches
        .get_raw(id)
        .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let source = source_of(matches, id, file, role, flag);
    if raw.is_empty() || matches.value_source(id).is_none() {
        out.push_str(&format!("# {flag} (unset)\n"));
        return;
    }
    let value = mask(id, &raw.join(","));
    let quoted = toml::Value::String(value).to_string();
    out.push_str(&format!("{flag} = {quoted}  # {source}\n"));
}

/// Secrets never printed: tokens whole, URLs' passwords.
fn mask(id: &str, value: &str) -> String {
    if id.contains("token") && !id.contains("file") {
        "***".to_string()
    } else if id.ends_with("url") || id == "target" {
        crate::telemetry::redact_url(value)
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::config::{Cli, Command as Cmd};
    use clap::{CommandFactory, FromArgMatches};

    fn parse(file: &str, args: &[&str]) -> Result<Cli, String> {
        let settings = FileSettings::parse(file)?;
        let command = settings.apply(Cli::command())?;
        let matches = command
            .try_get_matches_from(args)
            .map_err(|e| e.to_string())?;
        Cli::from_arg_matches(&matches).map_err(|e| e.to_string())
    }

    #[test]
    fn the_file_sits_beneath_flags_and_above_defaults() {
        let file = "partitions = 16\nvalkey-namespace = \"shop\"\n\
                    [worker]\nworker-listen = \"127.0.0.1:9101\"\n\
                    [serve]\nlisten = \"127.0.0.1:9000\"\n";
        let cli = parse(file, &["streamstock", "worker"]).unwrap();
        assert_eq!(cli.common.partitions, 16);
        assert_eq!(cli.common.valkey_namespace, "shop");
        let Cmd::Worker(worker) = cli.command else {
            panic!("not worker")
        };
        assert_eq!(worker.listen.port(), 9101);
        // A flag beats the file.
        let cli = parse(file, &["streamstock", "--partitions", "4", "serve"]).unwrap();
        assert_eq!(cli.common.partitions, 4);
        let Cmd::Serve(serve) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(serve.gateway.listen.port(), 9000);
        // Unset in the file: the built-in default.
        assert_eq!(
            cli.common.durability,
            crate::cli::config::Durability::Strict
        );
    }

    #[test]
    fn unknown_keys_and_non_scalar_values_are_errors() {
        let err = parse("partitoins = 8\n", &["streamstock", "serve"]).unwrap_err();
        assert!(err.contains("`partitoins`"), "{err}");
        let err = parse("[worker]\nlisten-here = 1\n", &["streamstock", "worker"]).unwrap_err();
        assert!(err.contains("`listen-here` in [worker]"), "{err}");
        let err = parse("x = { a = 1 }\n", &["streamstock", "serve"]);
        assert!(err.is_err());
        let err = FileSettings::parse("partitions = ").unwrap_err();
        assert!(!err.is_empty());
    }

    #[test]
    fn lists_and_booleans_read_as_their_flags_would() {
        let file = "[serve]\ncors-origin = [\"https://a.example\", \"https://b.example\"]\ninsecure = true\n";
        let cli = parse(file, &["streamstock", "serve"]).unwrap();
        let Cmd::Serve(serve) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(serve.gateway.cors_origins.len(), 2);
        assert!(serve.gateway.insecure);
    }

    #[test]
    fn effective_settings_say_where_each_came_from_and_mask_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("streamstock.toml");
        std::fs::write(
            &path,
            "partitions = 16\n[serve]\napi-token = \"s3cret-token\"\n",
        )
        .unwrap();
        let args: Vec<OsString> = [
            "streamstock",
            "--config",
            path.to_str().unwrap(),
            "config",
            "--valkey-url",
            "redis://user:hunter2@10.0.0.5:6379",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let text = effective(&args, Cli::command()).unwrap();
        assert!(text.contains("partitions = \"16\"  # file"), "{text}");
        // In declaration order, where the file's value does not move it.
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle}: {text}"))
        };
        assert!(at("partitions = ") < at("valkey-namespace = "), "{text}");
        assert!(
            text.contains("valkey-url = \"redis://***@10.0.0.5:6379\"  # flag"),
            "{text}"
        );
        assert!(
            text.contains("durability = \"strict\"  # default"),
            "{text}"
        );
        assert!(
            text.contains("[worker]\nworker-listen = \"127.0.0.1:8001\"  # default"),
            "{text}"
        );
        assert!(text.contains("api-token = \"***\"  # file"), "{text}");
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret"),
            "{text}"
        );
    }

    #[test]
    fn the_path_comes_from_the_flag_in_either_spelling() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&args(&["streamstock", "--config", "/a.toml", "serve"])),
            Some(PathBuf::from("/a.toml"))
        );
        assert_eq!(
            config_path(&args(&["streamstock", "serve", "--config=/b.toml"])),
            Some(PathBuf::from("/b.toml"))
        );
    }
}
