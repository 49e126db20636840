//! The `chatroom` binary: read settings, start logging, bind, serve until
//! Ctrl-C or SIGTERM. Errors are reported once, here.

use std::process::ExitCode;

use chatroom::config::{Cli, Config};
use chatroom::{App, Stores};
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mut cli: Cli) -> Result<(), String> {
    if let Some(command) = cli.command.take() {
        return chatroom::run_command(command).await.map_err(|e| e.to_string());
    }
    match chatroom::os::raise_open_file_limit() {
        Ok(open_files) => tracing::info!(open_files, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let config = Config::from_cli(cli).map_err(|e| e.to_string())?;
    let addr = config.addr;
    if !addr.ip().is_loopback() && config.public_urls.is_empty() {
        tracing::warn!(
            "listening on {addr} without --public-url: any Host name is answered and same-origin means \"same as Host\"; \
             set --public-url to the address users open"
        );
    }
    let storage = Stores::describe(&config);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!("opening {storage}");
    let mut app = App::open(config).await.map_err(|e| format!("cannot open {storage}: {e}"))?;
    let metrics = app.bind_metrics().await.map_err(|e| e.to_string())?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(storage, "chatroom is listening on http://{local}");
    if let Some(metrics) = metrics {
        tracing::info!("metrics are served on http://{metrics}/metrics");
    }
    app.serve(listener, shutdown_signal()).await.map_err(|e| e.to_string())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
