//! The binary: reads the command line, `.env` and the environment, then
//! serves the [`Application`] the library builds from them until SIGTERM or
//! Ctrl-C, or runs one of the other subcommands (`check-config`, `healthcheck`,
//! `users set-role`).

use std::process::ExitCode;

use chatbot_server::allocator;
use chatbot_server::cli::{self, Command, Invocation};
use chatbot_server::config::Config;
use chatbot_server::startup::{Application, StartupError};
use chatbot_server::telemetry::{self, ErrorChain};
use tokio_util::sync::CancellationToken;

/// Exit code for configuration the server refuses to start with (and for a
/// command line clap refuses, which is its own default).
const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code for a dependency that failed at start-up (store unreachable, port
/// taken), and for a failed health check.
const EXIT_STARTUP_FAILED: u8 = 1;

fn main() -> ExitCode {
    // First, so --help and --version print without reading .env or any store.
    let invocation = match Invocation::parse_from(std::env::args_os()) {
        Ok(invocation) => invocation,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_BAD_CONFIG));
        }
    };
    // A missing .env is normal; a malformed one is worth saying.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("chatbot-server: could not read .env: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    }
    let config = match invocation.config(|name| std::env::var(name).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chatbot-server: configuration error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match invocation.command {
        Command::CheckConfig => {
            println!(
                "chatbot-server: configuration OK: {}",
                cli::summary(&config)
            );
            ExitCode::SUCCESS
        }
        Command::Healthcheck { .. } => {
            let timeout = invocation.healthcheck_timeout.unwrap_or_default();
            match cli::healthcheck(&config.server, timeout) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("chatbot-server: unhealthy: {e}");
                    ExitCode::from(EXIT_STARTUP_FAILED)
                }
            }
        }
        Command::Users(cli::UsersCommand::SetRole { username, role }) => {
            set_role(&config, &username, &role)
        }
        Command::Serve => {
            if let Some(filter) = invocation.flag("RUST_LOG") {
                // Still one thread: nothing else reads the environment yet.
                std::env::set_var("RUST_LOG", filter);
            }
            serve(config)
        }
    }
}

/// `users set-role`: one line on stdout when done, one on stderr otherwise.
fn set_role(config: &Config, username: &str, role: &str) -> ExitCode {
    let Ok(role) = chatbot_server::domain::UserRole::parse(role) else {
        // clap accepts only the two names; this is a usage error all the same.
        eprintln!("chatbot-server: role must be `user` or `agent`");
        return ExitCode::from(EXIT_BAD_CONFIG);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatbot-server: could not start the async runtime: {e}");
            return ExitCode::from(EXIT_STARTUP_FAILED);
        }
    };
    match runtime.block_on(cli::set_role(config, username, role)) {
        Ok(user) => {
            println!("chatbot-server: {} is now {}", user.username, user.role);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chatbot-server: {}", ErrorChain(&e));
            ExitCode::from(EXIT_STARTUP_FAILED)
        }
    }
}

fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatbot-server: could not start the async runtime: {e}");
            return ExitCode::from(EXIT_STARTUP_FAILED);
        }
    };
    // Built on the runtime it posts on; shut down below, after the server
    // stopped and before the runtime goes, so the last spans are sent.
    let traces = match config
        .observability
        .traces
        .as_ref()
        .map(|traces| telemetry::otel::provider(traces, runtime.handle().clone()))
    {
        None => None,
        Some(Ok(provider)) => Some(provider),
        Some(Err(e)) => {
            eprintln!("chatbot-server: {e}");
            return ExitCode::from(EXIT_STARTUP_FAILED);
        }
    };
    telemetry::init(
        config.server.env,
        telemetry::LogSettings {
            chat_content: config.observability.log_chat_content,
        },
        traces.as_ref(),
    );
    raise_open_file_limit();
    chatbot_server::adapters::outbound::argon2_hasher::return_large_allocations_to_the_system();

    let served = runtime.block_on(run(config));
    if let Some(provider) = &traces {
        telemetry::otel::shutdown(provider);
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %ErrorChain(&e), "could not start");
            eprintln!("chatbot-server: {}", ErrorChain(&e));
            ExitCode::from(EXIT_STARTUP_FAILED)
        }
    }
}

async fn run(config: Config) -> Result<(), StartupError> {
    let app = Application::build(config).await?;
    let stop_trimming = CancellationToken::new();
    let trimmer = tokio::spawn(allocator::return_freed_memory_periodically(
        stop_trimming.clone(),
    ));
    let served = app
        .run_until_stopped(async {
            shutdown_signal().await;
            // A second Ctrl-C or SIGTERM means "now": skip the grace period.
            tokio::spawn(async {
                shutdown_signal().await;
                eprintln!("chatbot-server: second signal, exiting immediately");
                std::process::exit(130);
            });
        })
        .await;
    stop_trimming.cancel();
    let _ = trimmer.await;
    served
}

/// Every WebSocket holds a file descriptor, and many systems start processes
/// with a soft limit of 1024: lift it to the hard limit the administrator allows.
#[cfg(unix)]
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let before = limit.rlim_cur;
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                limit.rlim_cur = before;
            }
        }
        limit.rlim_cur
    };
    tracing::info!(open_files = raised, "open-file limit");
}

#[cfg(not(unix))]
fn raise_open_file_limit() {}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
