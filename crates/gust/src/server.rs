//! `gust server`: wires the embedded shape together and serves it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use bytes::Bytes;
use gust_core::limits::MIN_LEASE_MS;
use gust_core::{Deployment, InvocationId, Runtime, WorkerId};
use gust_service::{Execution, Executor, Service, ServiceConfig, ServiceError, SystemClock};
use gust_store::Store;
use gust_store_postgres::{PgStore, DEFAULT_POOL_SIZE};
use gust_store_sqlite::{SqliteOptions, SqliteStore};
use gust_worker::{ArtifactSource, Worker, WorkerConfig, DEFAULT_IDLE_TTL, DEFAULT_MAX_CONCURRENCY};

use crate::host::HostRuntimes;
use crate::node::{AbortOnDrop, ShutdownSignals, DEFAULT_SHUTDOWN_GRACE_S, FORCED_SHUTDOWN_PATIENCE};

#[derive(clap::Args, Debug)]
pub struct ServerOpts {
    /// Where the embedded store keeps its database, artifacts and compiled modules.
    #[arg(long, env = "GUST_DATA_DIR", default_value = "./.gust")]
    pub data_dir: PathBuf,
    /// Where state lives: omitted for the embedded SQLite store in --data-dir, or a
    /// `postgres://user@host:port/db` URL for the cluster shape (any number of servers).
    #[arg(long, env = "GUST_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// With a PostgreSQL store: keep gust's tables in this schema (created if missing), so
    /// several gust deployments can share one database.
    #[arg(long, env = "GUST_STORE_SCHEMA")]
    pub store_schema: Option<String>,
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "GUST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// How logs are written to stderr: text, or one JSON object per line (with each API
    /// request's `request_id`).
    #[arg(long, env = "GUST_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: crate::node::LogFormat,
    /// Serve HTTPS with this certificate chain (PEM, leaf first). Reloaded on SIGHUP and when
    /// the file changes.
    #[arg(long, env = "GUST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "GUST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Listen beyond loopback without TLS (when a proxy in front terminates it): tokens, code
    /// and payloads then cross the network as plain HTTP.
    #[arg(long, env = "GUST_INSECURE_HTTP", conflicts_with = "tls_cert")]
    pub insecure_http: bool,
    /// Milliseconds between looks at the TLS files' modification times (hidden, for tests).
    #[arg(long, hide = true, default_value_t = gust_api::tls::DEFAULT_TLS_POLL.as_millis() as u64)]
    pub tls_poll_ms: u64,
    /// Bearer token required on the /v1 API: the bootstrap admin, which creates named keys
    /// with roles (`gust token create`). Required unless listening on loopback.
    #[arg(long, env = "GUST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// An AWS API credential, `ACCESS_KEY_ID:SECRET` (repeatable). With a --token or any of
    /// these, every AWS API request must be SigV4-signed by a known key; the --token also
    /// signs as access key id `gust`.
    #[arg(
        long = "aws-credential",
        env = "GUST_AWS_CREDENTIALS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub aws_credentials: Vec<String>,
    /// A web page origin allowed to call the API from a browser, `scheme://host[:port]`
    /// (repeatable). Requests from any other page's origin are refused.
    #[arg(long = "allow-origin", env = "GUST_ALLOW_ORIGINS", value_delimiter = ',')]
    pub allow_origins: Vec<String>,
    /// A name this server answers to, `NAME` or `NAME:PORT` (repeatable). Without a --token the
    /// API answers only requests whose Host is its own address or localhost (DNS rebinding).
    #[arg(long = "public-host", env = "GUST_PUBLIC_HOSTS", value_delimiter = ',')]
    pub public_hosts: Vec<String>,
    /// Serve function URLs by host name too: a request whose Host is `<url-id>.DOMAIN` is that
    /// URL's, with the whole path its own (point a wildcard DNS name and certificate here).
    /// URLs are then shown as `https://<url-id>.DOMAIN/` (http without --tls-cert).
    #[arg(long, env = "GUST_URL_DOMAIN")]
    pub url_domain: Option<String>,
    /// A second listener for function URLs only, addressed by host: `<url-id>.localhost:PORT`
    /// (browsers resolve any *.localhost to loopback), with the whole path the function's and
    /// an origin of its own. URLs are shown that way unless --url-domain is given.
    #[arg(long, env = "GUST_URL_LISTEN")]
    pub url_listen: Option<SocketAddr>,
    /// Connections served at once (also at most 3/4 of the open-file limit); more wait in the
    /// listen backlog until one closes.
    #[arg(long, default_value_t = gust_api::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Milliseconds a client has to send a request's headers (also the keep-alive idle time).
    #[arg(long, hide = true, default_value_t = gust_api::DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64)]
    pub header_read_timeout_ms: u64,
    /// Invocations the local worker runs at once.
    #[arg(long, default_value_t = DEFAULT_MAX_CONCURRENCY)]
    pub max_concurrency: usize,
    /// Seconds a warm environment may stay idle before it is reaped.
    #[arg(long, default_value_t = DEFAULT_IDLE_TTL.as_secs())]
    pub idle_ttl_s: u64,
    /// Lease of an attempt in milliseconds, renewed while it runs.
    #[arg(long, default_value_t = gust_core::limits::DEFAULT_LEASE_MS as u64)]
    pub lease_ms: u64,
    /// Seconds a SIGTERM (or SIGINT) waits for in-flight invocations and running attempts to
    /// finish before handing back what still runs; a second signal cuts it short.
    #[arg(long, env = "GUST_SHUTDOWN_GRACE", default_value_t = DEFAULT_SHUTDOWN_GRACE_S)]
    pub shutdown_grace: u64,
    /// How long the records of ended invocations (payload, result, log) are kept, e.g. 7d,
    /// 12h, 30m; `off` keeps them until the byte budget needs the room.
    #[arg(long, default_value = "7d", value_parser = parse_retention_age)]
    pub retain_invocations: OptionalDuration,
    /// Most bytes the records of ended invocations may hold (oldest deleted first), e.g. 1GB,
    /// 512MB; `off` for no budget.
    #[arg(long, default_value = "1GB", value_parser = parse_retention_bytes)]
    pub retain_invocation_bytes: OptionalBytes,
    /// Most async invocations of one function waiting to run; more answer 429.
    #[arg(long, default_value_t = gust_service::QueueCaps::default().per_function)]
    pub max_queued_async_per_function: u64,
    /// Most async invocations of all functions waiting to run; more answer 429.
    #[arg(long, default_value_t = gust_service::QueueCaps::default().total)]
    pub max_queued_async: u64,
    /// Most schedules (of all groups); creating more is refused.
    #[arg(long, default_value_t = gust_service::DEFAULT_MAX_SCHEDULES)]
    pub max_schedules: u64,
    /// Export traces (OpenTelemetry, OTLP over HTTP with JSON) to this collector, e.g.
    /// `http://127.0.0.1:4318`: spans of each attempt (invocation, queue, init, run), in the
    /// caller's trace when it sent `traceparent` or `X-Amzn-Trace-Id`. Off by default.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of exported spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "gust")]
    pub otlp_service_name: String,
    /// How often retention runs, in milliseconds (for tests).
    #[arg(long, hide = true, default_value_t = 60_000)]
    pub retention_interval_ms: u64,
    /// How often unreferenced code (artifacts, task roots, compiled modules) is collected, in
    /// milliseconds (for tests).
    #[arg(long, hide = true, default_value_t = gust_service::gc::DEFAULT_GC_INTERVAL.as_millis() as u64)]
    pub gc_interval_ms: u64,
    /// How long unreferenced code survives before it is collected, in milliseconds (for tests).
    #[arg(long, hide = true, default_value_t = gust_service::gc::DEFAULT_GC_GRACE.as_millis() as u64)]
    pub gc_grace_ms: u64,
    /// Enrollment token for remote workers (`gust worker --worker-token`): a worker that
    /// presents it gets its own id and secret, and acts only with that. Workers with a
    /// provisioned secret (`gust workers create NAME`) need no token.
    #[arg(long, env = "GUST_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: Option<String>,
    /// Seconds an enrolled worker's credential outlives its last heartbeat; then it is refused
    /// and deleted (the worker enrolls again when restarted).
    #[arg(long, env = "GUST_WORKER_CREDENTIAL_TTL", default_value_t = gust_service::DEFAULT_ENROLLED_CREDENTIAL_TTL.as_secs())]
    pub worker_credential_ttl: u64,
    /// Run no invocations in this process: all work, sync included, goes to remote workers.
    #[arg(long)]
    pub no_local_worker: bool,
    /// With a PostgreSQL store: the URL the cluster's other servers reach this one at, to hand
    /// it sync invocations for the workers attached here (scheme and host[:port]). Default: the
    /// listening address, unless that is 0.0.0.0 or :: (then peers reach this server's
    /// workers through the store, a few round trips slower).
    #[arg(long, env = "GUST_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// CA certificates (PEM) to trust for `https://` peer servers besides the system's.
    #[arg(long, env = "GUST_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,
    #[command(flatten)]
    pub runtimes: crate::host::RuntimeOpts,
    /// Commit with synchronous=NORMAL: survives a process crash but may lose the last
    /// acknowledged writes on power loss. Default is an fsync per group commit.
    #[arg(long)]
    pub no_fsync: bool,
    /// MiB of free disk the embedded store keeps for finishing work already accepted (claims,
    /// completions): below it, deploys, code uploads and async invocations are refused with
    /// 507 until space is freed. At most 2% of the disk.
    #[arg(long, env = "GUST_DISK_RESERVE_MB", default_value_t = gust_store::space::DEFAULT_DISK_RESERVE_BYTES >> 20)]
    pub disk_reserve_mb: u64,
    /// A file holding the 64-hex-digit key that encrypts functions' environment variables at
    /// rest (AES-256-GCM). Default in the embedded shape: `secrets.key` in the data dir,
    /// generated on first start; a cluster needs it (the same file on every server), else
    /// environment variables are stored unencrypted, with a warning.
    #[arg(long, env = "GUST_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// Isolation of process functions: strict (namespaces and a non-root user, or refuse to
    /// start), best-effort (what this host allows, warning about the rest) or none.
    #[arg(long, env = "GUST_ISOLATION", default_value = "best-effort")]
    pub isolation: gust_runtime::sandbox::Isolation,
    /// Let wasi:http components' outgoing requests (to hosts their function allows) reach
    /// loopback and private addresses too; by default public addresses only.
    #[arg(long, env = "GUST_ALLOW_PRIVATE_OUTBOUND")]
    pub allow_private_outbound: bool,
    /// MiB of address space the compiler of a wasm module may use (hidden, for tests).
    #[arg(long, hide = true, default_value_t = gust_runtime::wasm::DEFAULT_COMPILE_MEMORY_BYTES >> 20)]
    pub compile_memory_mb: u64,
    /// Milliseconds a wasm module may take to compile (hidden, for tests).
    #[arg(long, hide = true, default_value_t = gust_runtime::wasm::DEFAULT_COMPILE_TIMEOUT.as_millis() as u64)]
    pub compile_timeout_ms: u64,
}

/// The store, as the local worker's source of code.
struct StoreArtifacts(Arc<dyn Store>);

#[async_trait]
impl ArtifactSource for StoreArtifacts {
    async fn artifact(&self, sha256: &str) -> Result<Bytes, String> {
        self.0.get_artifact(sha256).await.map_err(|e| e.to_string())
    }
}

/// The local worker, as the service's executor.
struct LocalExecutor(Arc<Worker>);

#[async_trait]
impl Executor for LocalExecutor {
    async fn execute(
        &self, deployment: &Deployment, id: &InvocationId, payload: Bytes,
        call: &gust_core::lambda::CallContext<'_>,
    ) -> Execution {
        let mut out = self.0.execute(deployment, &id.0, payload, call).await;
        let report = gust_worker::report(&out, deployment.spec.memory_mb);
        let log = std::mem::take(&mut out.log);
        Execution { result: out.into_result(), log, report: Some(report) }
    }

    fn serves_http(&self, deployment: &Deployment) -> bool {
        self.0.serves_http(deployment)
    }

    fn free_slots(&self) -> usize {
        self.0.free_slots()
    }

    fn write_metrics(&self, out: &mut String) {
        self.0.metrics().write(out);
    }

    fn forget_function(&self, function: &str) {
        self.0.metrics().forget(function);
    }

    async fn prepare_code(&self, runtime: Runtime, sha256: &str, code: Bytes) -> Result<(), ServiceError> {
        self.0.prepare_code(runtime, sha256, code).await.map_err(|e| match e {
            gust_runtime::PrepareError::NoSpace(_) => ServiceError::InsufficientStorage(e.to_string()),
            e => ServiceError::InvalidCode(e.to_string()),
        })
    }

    fn reap_idle(&self) -> usize {
        self.0.reap_idle()
    }

    fn warm_environments(&self) -> usize {
        self.0.load().warm_environments
    }

    fn runs(&self, runtime: Runtime) -> bool {
        self.0.runs(runtime)
    }

    async fn collect_cache(
        &self, keep: std::collections::HashSet<String>, grace: Duration,
    ) -> gust_service::gc::CacheCollected {
        let c = crate::node::collect_cache(self.0.clone(), keep, grace).await;
        gust_service::gc::CacheCollected { task_roots: c.task_roots, modules: c.modules, bytes: c.bytes }
    }
}

/// Installs the key that seals functions' environment variables in the store: the given file
/// (which must exist), or, in the embedded shape, `secrets.key` in the data dir (created on
/// first start).
fn install_secrets_key(opts: &ServerOpts) -> anyhow::Result<()> {
    let path = match &opts.secrets_key_file {
        Some(p) => {
            let p = std::path::absolute(p)?;
            anyhow::ensure!(p.is_file(), "--secrets-key-file {}: no such file", p.display());
            p
        }
        // Servers of a cluster share the database, so they must share the key: a key made in
        // one server's data dir would lock the others out.
        None if opts.store.is_some() => {
            tracing::warn!("no --secrets-key-file: functions' environment variables are stored UNENCRYPTED in PostgreSQL; give every server the same key file to seal them");
            return Ok(());
        }
        None => opts.data_dir.join("secrets.key"),
    };
    let key = gust_store::secrets::load_or_create_key(&path)
        .with_context(|| format!("the secrets key {}", path.display()))?;
    gust_store::secrets::install(&key).map_err(anyhow::Error::msg)
}

pub fn run(mut opts: ServerOpts) -> anyhow::Result<()> {
    crate::node::init_tracing(opts.log_format);
    if opts.token.is_none() && !opts.listen.ip().is_loopback() {
        bail!("refusing to listen on {} without --token: the API would be open to the network", opts.listen);
    }
    if opts.tls_cert.is_none() && !opts.insecure_http && !opts.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {} without TLS: tokens, code and payloads would cross the network in clear text; give --tls-cert and --tls-key, or --insecure-http if a proxy in front of gust terminates TLS",
            opts.listen
        );
    }
    // Function URLs beyond loopback: the same rules, since AWS_IAM URLs check the token and
    // API keys, and their callers send credentials.
    if let Some(at) = opts.url_listen.filter(|a| !a.ip().is_loopback()) {
        if opts.token.is_none() {
            bail!("refusing to serve function URLs on {at} without --token: AWS_IAM URLs would be open to the network");
        }
        if opts.tls_cert.is_none() && !opts.insecure_http {
            bail!("refusing to serve function URLs on {at} without TLS: give --tls-cert and --tls-key, or --insecure-http if a proxy in front of gust terminates TLS");
        }
    }
    if opts.max_concurrency == 0 || opts.lease_ms < MIN_LEASE_MS {
        bail!("--max-concurrency must be at least 1 and --lease-ms at least {MIN_LEASE_MS}");
    }
    if opts.worker_credential_ttl == 0 {
        bail!("--worker-credential-ttl must be at least 1 second (workers heartbeat twice a second)");
    }
    // Every path is resolved once, here: the store, the worker and the sandbox see only
    // absolute ones.
    opts.data_dir = crate::host::resolve_dir(&opts.data_dir, "--data-dir")?;
    install_secrets_key(&opts)?;
    let host = HostRuntimes::detect(&opts.runtimes)?;
    let sandbox = crate::node::sandbox(opts.isolation, &opts.data_dir, &host)?;
    let mut worker_cfg = crate::node::worker_config(
        opts.max_concurrency,
        Duration::from_secs(opts.idle_ttl_s),
        &opts.data_dir,
        &host,
        sandbox,
    );
    worker_cfg.wasm.compile_limits.max_memory_bytes = opts.compile_memory_mb << 20;
    worker_cfg.wasm.compile_limits.timeout = Duration::from_millis(opts.compile_timeout_ms);
    worker_cfg.wasm.allow_private_outbound = opts.allow_private_outbound;
    if opts.no_local_worker {
        tracing::info!("no local worker: remote workers run every function");
    } else {
        host.log();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(opts, worker_cfg))
}

/// How function URLs are shown, `{id}` standing for a URL's id: under `--url-domain`, on the
/// `--url-listen` listener as `<id>.localhost`, or path-based on the main listener.
fn url_template(
    scheme: &str, addr: SocketAddr, url_addr: Option<SocketAddr>, domain: Option<&str>,
    public_hosts: &[String],
) -> String {
    if let Some(domain) = domain {
        return format!("{scheme}://{{id}}.{}/", domain.trim_end_matches('.').to_ascii_lowercase());
    }
    if let Some(at) = url_addr {
        return format!("{scheme}://{{id}}.localhost:{}/", at.port());
    }
    let host = if addr.ip().is_unspecified() {
        public_hosts.first().cloned().unwrap_or_else(|| format!("localhost:{}", addr.port()))
    } else {
        addr.to_string()
    };
    format!("{scheme}://{host}/url/{{id}}/")
}

async fn serve(opts: ServerOpts, worker_cfg: WorkerConfig) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = match &opts.store {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Arc::new(
            PgStore::connect(url, opts.store_schema.as_deref(), DEFAULT_POOL_SIZE)
                .await
                .context("connecting to PostgreSQL")?,
        ),
        Some(other) => {
            bail!("--store must be a postgres:// URL, got {:?}", other.split('@').next_back().unwrap_or(""))
        }
        None => Arc::new(
            SqliteStore::open(
                &opts.data_dir,
                SqliteOptions {
                    fsync_every_commit: !opts.no_fsync,
                    disk_reserve_bytes: opts.disk_reserve_mb << 20,
                },
            )
            .with_context(|| format!("opening the store in {}", opts.data_dir.display()))?,
        ),
    };
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let url_listener = match opts.url_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at).await.with_context(|| format!("binding --url-listen {at}"))?,
        ),
        None => None,
    };
    let scheme = if opts.tls_cert.is_some() { "https" } else { "http" };
    // Peers exist only where servers share a store (PostgreSQL).
    let clustered = opts.store.is_some();
    let advertise = match clustered {
        true => crate::peers::advertised(opts.advertise_url.as_deref(), scheme, addr)?,
        false => None,
    };
    let cluster_ca = match &opts.cluster_ca {
        Some(path) => crate::client_tls::load_ca(path).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    let worker = Worker::new(worker_cfg, Arc::new(StoreArtifacts(store.clone())))
        .context("starting the local worker")?;
    let mut cfg = ServiceConfig::new(WorkerId(format!("local-{}", gust_worker::boot_id())));
    cfg.lease = Duration::from_millis(opts.lease_ms);
    cfg.local_worker = !opts.no_local_worker;
    cfg.enrolled_credential_ttl = Duration::from_secs(opts.worker_credential_ttl);
    cfg.retention = gust_service::Retention {
        max_age: opts.retain_invocations.0,
        max_bytes: opts.retain_invocation_bytes.0,
        interval: Duration::from_millis(opts.retention_interval_ms.max(10)),
    };
    cfg.queue_caps = gust_service::QueueCaps {
        per_function: opts.max_queued_async_per_function,
        total: opts.max_queued_async,
    };
    cfg.max_schedules = opts.max_schedules;
    cfg.advertise = advertise.clone();
    let otlp = match &opts.otlp_endpoint {
        Some(endpoint) => {
            let client = reqwest::Client::builder().build().context("the OTLP client")?;
            let otlp = crate::otlp::start(endpoint, &opts.otlp_service_name, client);
            worker.export_spans_to(otlp.clone());
            cfg.sample_new_traces = true;
            tracing::info!(endpoint = %crate::otlp::traces_url(endpoint), "exporting traces");
            Some(otlp)
        }
        None => None,
    };
    if opts.no_local_worker && opts.worker_token.is_none() {
        tracing::warn!("--no-local-worker without --worker-token: only workers with a provisioned credential (`gust workers create NAME`) can run anything");
    }
    let service = Service::new(store, Arc::new(LocalExecutor(worker)), Arc::new(SystemClock), cfg);
    if let Some(otlp) = otlp {
        service.export_spans_to(otlp);
    }
    let peer_secret = match clustered {
        true => {
            let secret = service.peer_secret().await.context("reading the cluster's peer secret")?;
            service.hand_over_with(Arc::new(crate::peers::HttpPeers::new(secret.clone(), cluster_ca)?));
            if advertise.is_none() {
                tracing::info!("no --advertise-url (listening on {addr}): peers reach this server's workers through the store");
            }
            advertise.is_some().then(|| Arc::<str>::from(secret))
        }
        false => None,
    };
    let _background = service.start();
    let _code_collector =
        AbortOnDrop(vec![tokio::spawn(service.clone().collect_code_forever(gust_service::gc::GcConfig {
            interval: Duration::from_millis(opts.gc_interval_ms.max(10)),
            grace: Duration::from_millis(opts.gc_grace_ms),
            ..gust_service::gc::GcConfig::default()
        }))]);
    let mut aws_credentials = std::collections::HashMap::new();
    for c in &opts.aws_credentials {
        match c.split_once(':') {
            Some((id, secret)) if !id.is_empty() && !secret.is_empty() => {
                aws_credentials.insert(id.to_string(), secret.to_string());
            }
            _ => bail!("--aws-credential must be ACCESS_KEY_ID:SECRET"),
        }
    }
    if let Some(token) = &opts.token {
        aws_credentials.entry("gust".to_string()).or_insert_with(|| token.clone());
    }
    let url_addr = url_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let urls = gust_api::UrlAddressing {
        domain: opts.url_domain.clone().map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
        template: url_template(scheme, addr, url_addr, opts.url_domain.as_deref(), &opts.public_hosts),
    };
    let api = gust_api::ApiConfig {
        token: opts.token.map(|t| Arc::<str>::from(t.as_str())),
        worker_token: opts.worker_token.map(|t| Arc::<str>::from(t.as_str())),
        aws_credentials: Arc::new(aws_credentials),
        browser: Arc::new(gust_api::BrowserPolicy::new(&opts.allow_origins, &opts.public_hosts)?),
        urls: Arc::new(urls),
        peer_secret,
    };
    let url_router = url_listener.is_some().then(|| gust_api::url_router(service.clone(), api.clone()));
    let router = gust_api::router(service.clone(), api);
    let limits = gust_api::ServeLimits {
        header_read_timeout: Duration::from_millis(opts.header_read_timeout_ms.max(1)),
        max_connections: opts.max_connections.max(1),
        ..gust_api::ServeLimits::default()
    };
    let tls = match (&opts.tls_cert, &opts.tls_key) {
        (Some(cert), Some(key)) => {
            let files =
                gust_api::tls::TlsFiles { cert: std::path::absolute(cert)?, key: std::path::absolute(key)? };
            Some(gust_api::tls::ServerTls::load(files).context("loading the TLS certificate")?)
        }
        _ => None,
    };
    let shape = if opts.store.is_some() { "cluster (PostgreSQL)" } else { "embedded (SQLite)" };
    tracing::info!(shape, data_dir = %opts.data_dir.display(), worker = %service.worker_id(), "gust server started");
    let signals = ShutdownSignals::install()?;
    // Before the listening line: from then on a SIGHUP reloads instead of ending the process.
    let _reloader = match &tls {
        Some(tls) => {
            Some(keep_certificate_current(tls.clone(), Duration::from_millis(opts.tls_poll_ms.max(10)))?)
        }
        None => None,
    };
    // Tests and scripts read this line to learn the port.
    crate::announce(format_args!("gust listening on {scheme}://{addr}"));
    let _url_http = match (url_listener, url_router) {
        (Some(l), Some(r)) => {
            let (tls_urls, stop) = (tls.clone(), signals.received(1));
            crate::announce(format_args!("gust function URLs on {scheme}://{}", l.local_addr()?));
            Some(AbortOnDrop(vec![tokio::spawn(async move {
                if let Err(e) = gust_api::serve(l, r, limits, tls_urls, stop).await {
                    tracing::error!(error = %e, "the function URL listener stopped");
                }
            })]))
        }
        _ => None,
    };
    let mut http = tokio::spawn(gust_api::serve(listener, router, limits, tls, signals.received(1)));
    tokio::select! {
        // The HTTP server ends on the signal too: the signal wins.
        biased;
        () = signals.received(1) => {}
        served = &mut http => {
            served??;
            bail!("the HTTP server stopped by itself");
        }
    }
    // Graceful shutdown: the HTTP server stops accepting (and closes each connection after
    // its request in flight); the service refuses new invocations and claims no more work.
    let grace = Duration::from_secs(opts.shutdown_grace);
    service.begin_shutdown();
    tracing::info!(grace_s = opts.shutdown_grace, running = service.running_attempts(), "shutting down");
    let drained = async {
        let _ = (&mut http).await;
        service.attempts_finished().await;
    };
    let forced = signals.grace(drained, grace).await;
    // Hand back what still runs (redelivered at once) and write every queued sync record.
    let patience = forced.then_some(FORCED_SHUTDOWN_PATIENCE);
    let done = service.finish_shutdown(patience).await;
    http.abort();
    drop(_background);
    if !done.records_written {
        tracing::error!("shutdown: not every keyless sync record could be written");
    }
    tracing::info!(
        handed_back = done.handed_back,
        finished_meanwhile = done.not_handed_back,
        records_lost = done.records_lost,
        "gust server stopped"
    );
    Ok(())
}

/// Reloads the TLS certificate on SIGHUP and when its files change, until the returned task is
/// dropped (aborted).
fn keep_certificate_current(
    tls: Arc<gust_api::tls::ServerTls>, poll: Duration,
) -> anyhow::Result<AbortOnDrop> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("handling SIGHUP")?;
    let reload_now = Arc::new(tokio::sync::Notify::new());
    let notify = reload_now.clone();
    let forward = tokio::spawn(async move {
        while hup.recv().await.is_some() {
            notify.notify_one();
        }
    });
    let watch = tokio::spawn(tls.keep_current(reload_now, poll));
    Ok(AbortOnDrop(vec![forward, watch]))
}

/// A duration flag that may be `off`.
#[derive(Debug, Clone, Copy)]
pub struct OptionalDuration(pub Option<Duration>);

/// A size flag that may be `off`.
#[derive(Debug, Clone, Copy)]
pub struct OptionalBytes(pub Option<u64>);

fn parse_retention_age(s: &str) -> Result<OptionalDuration, String> {
    if s == "off" {
        return Ok(OptionalDuration(None));
    }
    match gust_service::retention::parse_duration(s)? {
        d if d.is_zero() => {
            Err("a retention of 0 would delete every record as it ends; use off or a duration".into())
        }
        d => Ok(OptionalDuration(Some(d))),
    }
}

fn parse_retention_bytes(s: &str) -> Result<OptionalBytes, String> {
    if s == "off" {
        return Ok(OptionalBytes(None));
    }
    gust_service::retention::parse_bytes(s).map(|b| OptionalBytes(Some(b)))
}
