//! The command line: subcommands, and a flag for every setting that is not a
//! secret, overlaid on the environment before [`Config::from_lookup`] parses it.
//!
//! The flags come from the settings table ([`crate::config::settings`]),
//! flattened into [`Cli`]; [`Config::from_lookup`] stays the one parser of
//! settings: every flag is a plain string that clap only gathers. The
//! `[default: …]` clap prints comes from the same table the parsers read their
//! defaults from; values clap fills in from a default are never passed on, and
//! a unit test checks that each one means what the parsers do when the setting
//! is unset. Secrets (the JWT secret, API keys, URIs that carry credentials)
//! are read from the environment only: a flag would show them to anyone who
//! can list processes.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Config, ConfigError, ServerConfig};
/// The settings that may be flags, and those that may not, as the
/// settings table declares them.
pub use crate::config::{Settings, SECRET_SETTINGS};

const AFTER_HELP: &str = "\
Every option is also read from the environment variable shown, and from a .env
file in the working directory; a flag wins over both. Secrets are read from the
environment (or .env) only, never from flags:
  JWT_SECRET, MONGODB_URI, REDIS_URL, REDIS_CLUSTER_URLS, OPENAI_API_KEY,
  AI_FALLBACK_OPENAI_API_KEY, OTEL_EXPORTER_OTLP_HEADERS

Exit codes: 0 success, 1 start-up failure (a store unreachable, the port
taken), 2 configuration error (one line saying which setting).";

/// `chatbot-server [OPTIONS] [COMMAND]`.
#[derive(Debug, Parser)]
#[command(
    name = "chatbot-server",
    version,
    about = "WebSocket chat gateway between chat clients and an AI service",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

/// What the process does; serving when none is given.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve until SIGTERM or Ctrl-C (the default).
    #[command(after_help = AFTER_HELP)]
    Serve,
    /// Validate the configuration (environment, .env, flags) without serving:
    /// exit 0 when it is valid, 2 with one line saying what is wrong.
    #[command(after_help = AFTER_HELP)]
    CheckConfig,
    /// GET /health of the server this configuration describes (HOST, PORT):
    /// exit 0 when it answers 200, 1 otherwise. For container health checks,
    /// which then need no curl.
    #[command(after_help = AFTER_HELP)]
    Healthcheck {
        /// Give up after this long.
        #[arg(long, value_name = "DURATION", default_value = "3s")]
        timeout: String,
    },
    /// Manage the accounts in the configured user store (SQLite or MongoDB).
    #[command(subcommand)]
    Users(UsersCommand),
}

/// `chatbot-server users …`: operator actions on accounts.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum UsersCommand {
    /// Make USERNAME an agent (who claims queued conversations on /agent) or
    /// a plain user again. Exit 0 when done, 1 for an unknown user or a store
    /// that fails, 2 for bad configuration. Takes effect at once, also for
    /// sockets and requests already open.
    #[command(after_help = AFTER_HELP)]
    SetRole {
        /// The exact username, as used to log in.
        username: String,
        /// `agent` or `user`.
        #[arg(value_parser = ["user", "agent"])]
        role: String,
    },
}

/// The parsed command line.
pub struct Invocation {
    pub command: Command,
    /// `--healthcheck`'s bound, parsed.
    pub healthcheck_timeout: Option<Duration>,
    /// Variable name → value, for the settings given as flags.
    flags: HashMap<String, String>,
}

impl Invocation {
    /// Parses `args` (the program name first). `--help`, `--version` and
    /// usage errors come back as clap's error, to print and exit with.
    ///
    /// # Errors
    /// clap's error for `--help`, `--version` or a bad command line.
    pub fn parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        let command = cli.command.unwrap_or(Command::Serve);
        let healthcheck_timeout = match &command {
            Command::Healthcheck { timeout } => {
                let parsed = crate::domain::time::parse_duration(timeout)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        Cli::command().error(
                            clap::error::ErrorKind::ValueValidation,
                            format!(
                                "invalid --timeout {timeout:?}: expected a duration such as 3s"
                            ),
                        )
                    })?;
                Some(parsed)
            }
            _ => None,
        };
        Ok(Self {
            command,
            healthcheck_timeout,
            flags: flag_values(&matches),
        })
    }

    /// The value of `name` given as a flag, if it was.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags.get(name).map(String::as_str)
    }

    /// The configuration: flags over `env` (the process environment, with
    /// `.env` loaded into it).
    ///
    /// # Errors
    /// The first setting [`Config::from_lookup`] refuses.
    pub fn config(&self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| self.flags.get(name).cloned().or_else(|| env(name)))
    }
}

/// What `check-config` prints: where the server would listen and which
/// stores and AI it would use, with every credential masked.
/// Why `users set-role` did not change a role.
#[derive(Debug, thiserror::Error)]
pub enum SetRoleError {
    #[error("no user named {0:?}")]
    UnknownUser(String),
    #[error("{0}")]
    Store(#[from] crate::startup::StartupError),
    #[error("the user store failed")]
    Failed(#[source] crate::application::ports::UserStoreError),
}

/// `users set-role`: opens the store the server would use and sets the role.
///
/// # Errors
/// [`SetRoleError::UnknownUser`] when no account has that exact username;
/// the other variants when the store cannot be opened or fails.
pub async fn set_role(
    config: &Config,
    username: &str,
    role: crate::domain::UserRole,
) -> Result<crate::domain::User, SetRoleError> {
    use crate::application::ports::UserStoreError;
    // A name that cannot be parsed can never have been registered.
    let name = crate::domain::Username::parse(username)
        .map_err(|_| SetRoleError::UnknownUser(username.to_owned()))?;
    let users = crate::startup::open_user_store(&config.storage).await?;
    match users.set_role(&name, role).await {
        Ok(user) => Ok(user),
        Err(UserStoreError::NotFound) => Err(SetRoleError::UnknownUser(username.to_owned())),
        Err(e) => Err(SetRoleError::Failed(e)),
    }
}

pub fn summary(config: &Config) -> String {
    let listen = if config.server.all_interfaces() {
        format!(
            "every interface (IPv4 and IPv6), port {}",
            config.server.port
        )
    } else {
        SocketAddr::new(config.server.host, config.server.port).to_string()
    };
    let users = match &config.storage.mongodb_uri {
        Some(uri) => format!("MongoDB {uri}"),
        None => format!("SQLite {}", config.storage.sqlite_path.display()),
    };
    let sessions = match config.sessions.redis() {
        Some(redis) => redis.to_string(),
        None => "in memory".to_owned(),
    };
    let ai = match &config.ai.primary {
        Some(upstream) => format!("{} {}", upstream.provider(), upstream.url()),
        None => "built-in echo model".to_owned(),
    };
    let traces = match &config.observability.traces {
        // The endpoint only: its headers may hold a key.
        Some(traces) => format!("; traces: OTLP {}", traces.endpoint),
        None => String::new(),
    };
    format!(
        "{} on {listen}; users: {users}; sessions: {sessions}; AI: {ai}{traces}",
        config.server.env.as_str()
    )
}

/// GETs `/health` of the server `server` describes (on loopback when it
/// listens on every interface) and succeeds on a 200.
///
/// # Errors
/// Why the server is not healthy, in one line.
pub fn healthcheck(server: &ServerConfig, timeout: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    if server.port == 0 {
        return Err("PORT=0 names no port to check".into());
    }
    let ip = if server.all_interfaces() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        server.host
    };
    let addr = SocketAddr::new(ip, server.port);
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_write_timeout(Some(left()))
        .and_then(|()| stream.set_read_timeout(Some(left())))
        .map_err(|e| format!("{addr}: {e}"))?;
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: chatbot-server-healthcheck\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    // The status line is all we need; 64 bytes hold it.
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(format!("{addr}: {e}")),
        }
    }
    let status_line = String::from_utf8_lossy(&head[..read]);
    let status_line = status_line.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        Some(code) => Err(format!("GET http://{addr}/health answered {code}")),
        None => Err(format!("GET http://{addr}/health: no HTTP answer")),
    }
}

/// Variable name → value of each setting given on the command line. Values
/// clap took from the environment are left out (the environment is read
/// after `.env` is loaded), and so are clap's displayed defaults.
fn flag_values(matches: &ArgMatches) -> HashMap<String, String> {
    let command = Cli::command();
    let mut flags = HashMap::new();
    for arg in command.get_arguments() {
        let (Some(env), id) = (arg.get_env(), arg.get_id().as_str()) else {
            continue;
        };
        let from_command_line = leaf(matches).value_source(id) == Some(ValueSource::CommandLine)
            || matches.value_source(id) == Some(ValueSource::CommandLine);
        if !from_command_line {
            continue;
        }
        let value = leaf(matches)
            .get_one::<String>(id)
            .or_else(|| matches.get_one::<String>(id));
        if let (Some(env), Some(value)) = (env.to_str(), value) {
            flags.insert(env.to_owned(), value.clone());
        }
    }
    flags
}

/// The matches of the subcommand given, where a global flag written after
/// it is recorded.
fn leaf(matches: &ArgMatches) -> &ArgMatches {
    match matches.subcommand() {
        Some((_, sub)) => leaf(sub),
        None => matches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    fn names_with_flags() -> BTreeSet<String> {
        Cli::command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_win_over_the_environment_and_defaults_are_not_passed_on() {
        let inv = Invocation::parse_from(["chatbot-server", "--port", "4000"]).unwrap();
        assert_eq!(inv.command, Command::Serve);
        let env = |k: &str| (k == "PORT" || k == "SHUTDOWN_TIMEOUT").then(|| "5000".to_owned());
        let config = inv.config(env).unwrap();
        assert_eq!(config.server.port, 4000);
        assert_eq!(config.server.shutdown_timeout, Duration::from_secs(5000));
        assert_eq!(
            inv.flag("SHUTDOWN_TIMEOUT"),
            None,
            "clap's default is not a flag"
        );
    }

    #[test]
    fn a_flag_after_a_subcommand_counts_too() {
        let inv =
            Invocation::parse_from(["chatbot-server", "check-config", "--port", "4001"]).unwrap();
        assert_eq!(inv.command, Command::CheckConfig);
        assert_eq!(inv.flag("PORT"), Some("4001"));
        let inv =
            Invocation::parse_from(["chatbot-server", "--port", "4002", "healthcheck"]).unwrap();
        assert_eq!(inv.flag("PORT"), Some("4002"));
        assert_eq!(inv.healthcheck_timeout, Some(Duration::from_secs(3)));
    }

    #[test]
    fn secrets_are_never_flags() {
        let flags = names_with_flags();
        for secret in SECRET_SETTINGS {
            assert!(!flags.contains(*secret), "{secret} must not be a flag");
        }
        assert!(Invocation::parse_from(["chatbot-server", "--jwt-secret", "x"]).is_err());
    }

    /// Each default `--help` shows must mean what `config.rs` does when the
    /// setting is unset, or the help would lie.
    #[test]
    fn displayed_defaults_are_the_configs_defaults() {
        let unset = format!("{:?}", Config::from_lookup(|_| None).unwrap());
        let mut checked = 0;
        for arg in Cli::command().get_arguments() {
            let (Some(env), [default]) = (arg.get_env(), arg.get_default_values()) else {
                continue;
            };
            let (env, default) = (env.to_str().unwrap(), default.to_str().unwrap());
            let set = Config::from_lookup(|k| (k == env).then(|| default.to_owned()))
                .unwrap_or_else(|e| panic!("{env}={default}: {e}"));
            assert_eq!(
                format!("{set:?}"),
                unset,
                "{env}={default} is not the default"
            );
            checked += 1;
        }
        assert!(checked > 40, "only {checked} defaults checked");
    }

    /// A setting added to `config.rs` or `.env.example` without a flag (or a
    /// place in [`SECRET_SETTINGS`]) fails here.
    #[test]
    fn every_setting_is_a_flag_or_a_listed_secret() {
        let flags = names_with_flags();
        let asked = RefCell::new(BTreeSet::new());
        let lookups: [&[(&str, &str)]; 3] = [
            &[],
            &[
                ("AI_PROVIDER", "openai"),
                ("OPENAI_MODEL", "m"),
                ("AI_FALLBACK_PROVIDER", "openai"),
                ("AI_FALLBACK_OPENAI_MODEL", "m"),
            ],
            &[("APP_ENV", "production"), ("JWT_SECRET", &"s".repeat(40))],
        ];
        for pairs in lookups {
            let _ = Config::from_lookup(|k| {
                asked.borrow_mut().insert(k.to_owned());
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            });
        }
        let example = include_str!("../.env.example");
        let documented = example.lines().filter_map(|line| {
            let name = line.trim_start_matches('#').trim().split_once('=')?.0;
            (!name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit()))
            .then(|| name.to_owned())
        });
        let all: BTreeSet<String> = asked.into_inner().into_iter().chain(documented).collect();
        assert!(all.len() > 60, "{all:?}");
        for name in &all {
            assert!(
                flags.contains(name) || SECRET_SETTINGS.contains(&name.as_str()),
                "{name} is a setting but neither a flag nor a listed secret"
            );
        }
    }

    #[test]
    fn help_names_every_variable_but_shows_no_value() {
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("--port <VALUE>") && help.contains("[env: PORT"),
            "{help}"
        );
        assert!(help.contains("JWT_SECRET"), "secrets are named in the help");
        assert!(!help.contains("[env: PORT="), "{help}");
    }

    /// The help's closing text lists the secrets by hand: it must name each
    /// one the settings table declares.
    #[test]
    fn the_help_names_every_secret() {
        for secret in SECRET_SETTINGS {
            assert!(AFTER_HELP.contains(secret), "{secret} is not in the help");
        }
    }
}
