//! `lbd`: the lb daemon.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lb_userspace::daemon::{Daemon, KtlsMode};
use lb_userspace::tls::offload::KernelCipher;

#[derive(Parser)]
#[command(name = "lbd", version, about = "TLS-terminating load balancer: rustls handshakes, kTLS bulk crypto, XDP L4")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        /// Address of the HTTP endpoints (/metrics, /healthz).
        #[arg(long, default_value = "127.0.0.1:9876", env = "LBD_API_LISTEN")]
        api_listen: SocketAddr,
        /// kTLS use: `auto` probes the kernel and offloads what it supports; `off` keeps TLS in userspace.
        #[arg(long, value_enum, default_value = "auto", env = "LBD_KTLS")]
        ktls: KtlsMode,
        /// Keep connections using this cipher in userspace even where the kernel could take
        /// them (aes-128-gcm, aes-256-gcm, chacha20-poly1305); repeatable.
        #[arg(long = "ktls-userspace-cipher", value_parser = parse_cipher)]
        ktls_userspace_ciphers: Vec<KernelCipher>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LBD_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    match Cli::parse().command {
        Command::Serve { api_listen, ktls, ktls_userspace_ciphers } => serve(api_listen, ktls, ktls_userspace_ciphers).await,
    }
}

fn parse_cipher(name: &str) -> Result<KernelCipher, String> {
    KernelCipher::ALL.into_iter().find(|c| c.name() == name).ok_or_else(|| {
        let known: Vec<&str> = KernelCipher::ALL.iter().map(|c| c.name()).collect();
        format!("unknown cipher {name:?} (known: {})", known.join(", "))
    })
}

async fn serve(api_listen: SocketAddr, ktls: KtlsMode, userspace_ciphers: Vec<KernelCipher>) -> anyhow::Result<()> {
    let mut policy = ktls.policy();
    policy.userspace_ciphers = userspace_ciphers;
    let daemon = Daemon::start_with(policy);
    let api = tokio::net::TcpListener::bind(api_listen).await.with_context(|| format!("cannot listen on {api_listen}"))?;
    tracing::info!(%api_listen, "lbd serving /metrics and /healthz");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down");
    };
    axum::serve(api, daemon.router()).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
