//! `lbd`: the lb daemon, and its administration commands.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lb_userspace::api::{self, ApiState, keystone::admin};
use lb_userspace::controller::Controller;
use lb_userspace::daemon::{Daemon, KtlsMode};
use lb_userspace::store::Store;
use lb_userspace::store::seal::{Kek, random, write_private};
use lb_userspace::store::sqlite::SqliteStore;
use lb_userspace::tls::offload::KernelCipher;
use lb_userspace::xdp::{Settings as XdpSettings, XdpPlane};

#[derive(Parser)]
#[command(name = "lbd", version, about = "TLS-terminating load balancer: rustls handshakes, kTLS bulk crypto, XDP L4")]
struct Cli {
    /// State directory: database, key-encryption key, admin password.
    #[arg(long, global = true, env = "LBD_STATE_DIR", default_value = "/var/lib/lbd")]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: control API, controller, data plane.
    Serve {
        /// Address of the API (Keystone, Barbican, Octavia, Neutron lookup), /metrics and /healthz.
        #[arg(long, default_value = "127.0.0.1:9876", env = "LBD_API_LISTEN")]
        api_listen: SocketAddr,
        /// URL clients use to reach the API (catalog entries, hrefs). Default: http://<api-listen>.
        #[arg(long, env = "LBD_PUBLIC_URL")]
        public_url: Option<String>,
        /// Largest Barbican secret payload accepted, in bytes.
        #[arg(long, default_value_t = 64 * 1024, env = "LBD_MAX_SECRET_BYTES")]
        max_secret_bytes: usize,
        /// kTLS use: `auto` probes the kernel and offloads what it supports; `off` keeps TLS in userspace.
        #[arg(long, value_enum, default_value = "auto", env = "LBD_KTLS")]
        ktls: KtlsMode,
        /// Keep connections using this cipher in userspace even where the kernel could take
        /// them (aes-128-gcm, aes-256-gcm, chacha20-poly1305); repeatable.
        #[arg(long = "ktls-userspace-cipher", value_parser = parse_cipher)]
        ktls_userspace_ciphers: Vec<KernelCipher>,
        /// Have the kernel decrypt clients' TLS 1.3 records straight into lbd's buffers
        /// (TLS_RX_EXPECT_NO_PAD, Linux 6.0+): one copy less per received byte, but a client
        /// that pads its records makes the kernel decrypt them twice (counted as TlsDecryptRetry
        /// in /proc/net/tls_stat). Member connections always have it.
        #[arg(long, env = "LBD_KTLS_RX_EXPECT_NO_PAD")]
        ktls_rx_expect_no_pad: bool,
        /// Renew an offloaded connection's transmit key (TLS 1.3 KeyUpdate, kernels 6.14+) or,
        /// where it cannot be renewed, end the connection (close_notify, then FIN) before the key
        /// has encrypted this many records, where that is below the cipher suite's
        /// confidentiality limit (AES-128-GCM 2^24 records, AES-256-GCM 2^23), which applies
        /// anyway. Counted conservatively (a short send counts as a record).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..), env = "LBD_KTLS_RECORD_LIMIT")]
        ktls_record_limit: Option<u64>,
        /// Attach lb's XDP program to this interface (native mode, else generic); repeatable.
        /// Detached when lbd exits.
        #[arg(long = "xdp-interface", env = "LBD_XDP_INTERFACE")]
        xdp_interfaces: Vec<String>,
        /// The XDP object built by `cargo xtask build-ebpf`.
        #[arg(long, env = "LBD_XDP_OBJECT", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../lb-ebpf/target/bpfel-unknown-none/release/lb-xdp"))]
        xdp_object: PathBuf,
        /// Maglev table size of each XDP-forwarded listener: a prime, at most 65537.
        #[arg(long, default_value_t = lb_common::maglev::DEFAULT_TABLE_SIZE, env = "LBD_XDP_TABLE_SIZE")]
        xdp_table_size: u32,
        /// Default per-source new-connection limit enforced in XDP, RATE[:BURST] per second
        /// (0: none). A listener tag `syn_rate=RATE[:BURST]` overrides it.
        #[arg(long, default_value = "0", value_parser = lb_common::model::SynRate::parse, env = "LBD_XDP_SYN_RATE")]
        xdp_syn_rate: lb_common::model::SynRate,
        /// Source ports XDP uses for translated flows, MIN-MAX; keep them out of
        /// net.ipv4.ip_local_port_range.
        #[arg(long, default_value = "20000-32767", value_parser = parse_ports, env = "LBD_XDP_NAT_PORTS")]
        xdp_nat_ports: (u16, u16),
        /// Data-plane worker threads (like HAProxy's `nbthread`): each runs the client
        /// connections handed to it from accept to close, with its own idle member connections.
        /// The API, reconciler and health checks run on one more thread. Default: one worker
        /// per CPU lbd may run on.
        #[arg(long, env = "LBD_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
        worker_threads: Option<u16>,
    },
    /// Print `export OS_...` lines for the stock openstack CLI (admin credentials).
    Openrc,
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCmd),
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user with a role on a project (or reset an existing user's password and role there).
    Add {
        name: String,
        #[arg(long, env = "LBD_USER_PASSWORD")]
        password: String,
        #[arg(long, default_value = "admin")]
        project: String,
        /// admin, member or reader.
        #[arg(long, default_value = "member")]
        role: String,
    },
    List,
    Delete { name: String },
}

#[derive(Subcommand)]
enum ProjectCmd {
    Add { name: String },
    List,
}

fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s.split_once('-').ok_or_else(|| format!("{s:?} is not a range MIN-MAX"))?;
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("{p:?} is not a port number"));
    Ok((port(lo)?, port(hi)?))
}

fn parse_cipher(name: &str) -> Result<KernelCipher, String> {
    KernelCipher::ALL.into_iter().find(|c| c.name() == name).ok_or_else(|| {
        let known: Vec<&str> = KernelCipher::ALL.iter().map(|c| c.name()).collect();
        format!("unknown cipher {name:?} (known: {})", known.join(", "))
    })
}

const PASSWORD_FILE: &str = "admin-password";
const ENDPOINT_FILE: &str = "endpoint";

/// Opens (creating on first use, mode 0700) the state directory's store.
fn open_store(dir: &Path) -> anyhow::Result<Arc<SqliteStore>> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "state directory is readable by others; secrets are encrypted but the key-encryption key is in it");
    }
    let db = dir.join("state.db");
    if !db.exists() {
        // SQLite gives its -wal and -shm files the database file's mode.
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&db)?;
    }
    Ok(Arc::new(SqliteStore::open(&db).with_context(|| format!("cannot open {}", dir.join("state.db").display()))?))
}

/// The admin password: `LBD_ADMIN_PASSWORD`, else the one generated at first start.
fn admin_password(dir: &Path) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("LBD_ADMIN_PASSWORD") {
        return Ok(p);
    }
    let file = dir.join(PASSWORD_FILE);
    if !file.exists() {
        write_private(&file, hex::encode(random::<16>()).as_bytes())?;
    }
    Ok(std::fs::read_to_string(&file)?.trim().to_string())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LBD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Command::Serve { worker_threads, .. } = &cli.command {
        let n = worker_threads.map(usize::from).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        lb_userspace::proxy::workers::start(n).context("cannot start the data-plane workers")?;
    }
    // The control plane (API, reconciler, health checks) on its own thread.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(1).thread_name("lbd-control").build();
    runtime.context("cannot start the async runtime")?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = cli.state_dir;
    match cli.command {
        Command::Serve {
            api_listen,
            public_url,
            max_secret_bytes,
            ktls,
            ktls_userspace_ciphers,
            ktls_rx_expect_no_pad,
            ktls_record_limit,
            xdp_interfaces,
            xdp_object,
            xdp_table_size,
            xdp_syn_rate,
            xdp_nat_ports,
            worker_threads: _,
        } => {
            tracing::info!(threads = lb_userspace::proxy::workers::count(), "data-plane worker threads");
            let public_url = public_url.unwrap_or_else(|| format!("http://{api_listen}")).trim_end_matches('/').to_string();
            let mut policy = ktls.policy();
            policy.userspace_ciphers = ktls_userspace_ciphers;
            policy.client_rx_no_pad = ktls_rx_expect_no_pad;
            policy.record_limit = ktls_record_limit;
            let xdp = match xdp_interfaces.is_empty() {
                true => None,
                false => {
                    let settings = XdpSettings { table_size: xdp_table_size, syn_rate: xdp_syn_rate, nat_ports: xdp_nat_ports };
                    Some(XdpPlane::start(&xdp_object, &xdp_interfaces, settings)?)
                }
            };
            let daemon = Daemon::start_full(policy, xdp.clone());
            let result = serve(&dir, api_listen, public_url, max_secret_bytes, daemon).await;
            if let Some(x) = xdp {
                x.detach();
            }
            result
        }
        Command::Openrc => {
            let url = std::fs::read_to_string(dir.join(ENDPOINT_FILE)).unwrap_or_else(|_| "http://127.0.0.1:9876".into());
            let password = admin_password(&dir)?;
            print!(
                "export OS_AUTH_URL={}/v3\nexport OS_AUTH_TYPE=password\nexport OS_USERNAME=admin\nexport OS_PASSWORD='{}'\n\
                 export OS_PROJECT_NAME=admin\nexport OS_USER_DOMAIN_NAME=Default\nexport OS_PROJECT_DOMAIN_NAME=Default\n\
                 export OS_IDENTITY_API_VERSION=3\nexport OS_REGION_NAME=RegionOne\nexport OS_INTERFACE=public\n",
                url.trim(),
                password.replace('\'', r"'\''")
            );
            Ok(())
        }
        Command::User(cmd) => {
            let store = open_store(&dir)?;
            match cmd {
                UserCmd::Add { name, password, project, role } => {
                    let u = admin::add_user(store.as_ref(), &name, &password, &project, &role)?;
                    println!("{} {}", u.id, u.name);
                }
                UserCmd::List => {
                    let projects = admin::projects(store.as_ref())?;
                    for u in admin::users(store.as_ref())? {
                        let roles: Vec<String> = u
                            .roles
                            .iter()
                            .map(|r| format!("{}:{}", projects.iter().find(|p| p.id == r.project_id).map_or("?", |p| p.name.as_str()), r.role))
                            .collect();
                        println!("{} {} {}", u.id, u.name, roles.join(","));
                    }
                }
                UserCmd::Delete { name } => admin::delete_user(store.as_ref(), &name)?,
            }
            Ok(())
        }
        Command::Project(cmd) => {
            let store = open_store(&dir)?;
            match cmd {
                ProjectCmd::Add { name } => println!("{}", admin::add_project(store.as_ref(), &name)?.id),
                ProjectCmd::List => {
                    for p in admin::projects(store.as_ref())? {
                        println!("{} {}", p.id, p.name);
                    }
                }
            }
            Ok(())
        }
    }
}

async fn serve(dir: &Path, api_listen: SocketAddr, public_url: String, max_payload: usize, daemon: Arc<Daemon>) -> anyhow::Result<()> {
    let store = open_store(dir)?;
    let password = admin_password(dir)?;
    admin::bootstrap(store.as_ref(), &password)?;
    let kek = Arc::new(Kek::load_or_create(&dir.join("kek"))?);
    let _ = std::fs::write(dir.join(ENDPOINT_FILE), &public_url);
    let store: Arc<dyn Store> = store;
    let controller = Controller::new(store.clone(), kek.clone(), daemon.clone());
    tokio::spawn(controller.clone().run());
    let state = Arc::new(ApiState { store, kek, tokens: Default::default(), public_url, controller, max_payload });

    let app = api::router(state).merge(daemon.router());
    let listener = tokio::net::TcpListener::bind(api_listen).await.with_context(|| format!("cannot listen on {api_listen}"))?;
    let api_listen = listener.local_addr().unwrap_or(api_listen);
    tracing::info!(%api_listen, state_dir = %dir.display(), "lbd serving the control API, /metrics and /healthz");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down");
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
