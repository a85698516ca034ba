//! The `gust` command line: every command but `server`, `worker`, `completions` and `init` is
//! a client of the `/v1` API.
//!
//! Its habits (what scripts and fingers rely on): a change merges (flags change what they name
//! and nothing else; [`functions`]); durations take units and a bare number is seconds
//! ([`durations`]); lists never stop short silently ([`paging`]); each kind of failure has its
//! own exit code ([`api::Kind`]); the server and credentials come from flags, the environment or
//! a profile of the config file ([`config`]).

mod api;
mod config;
mod durations;
mod functions;
mod init;
mod paging;
mod progress;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::server::ServerOpts;
use api::{Api, Failure, Kind};

#[derive(Parser, Debug)]
#[command(
    name = "gust",
    version,
    about = "gust: a self-hosted serverless compute platform",
    after_help = api::EXIT_CODES
)]
struct Line {
    #[command(subcommand)]
    command: Command,
}

/// A parsed command line: the command, and the client options when it is a client command.
#[derive(Debug)]
pub struct Cli {
    pub global: Option<Global>,
    pub command: Command,
}

/// Commands that are not clients of a server, and so take no client options.
const NOT_CLIENTS: [&str; 4] = ["server", "worker", "completions", "init"];

impl Cli {
    /// Parses the command line. Every client command takes the client options
    /// (`gust invoke f --server URL`); `gust server` and `gust worker` neither show nor take
    /// them.
    pub fn parse_args() -> Result<Self, clap::Error> {
        Cli::parse_from(std::env::args_os())
    }

    /// Parses `argv` (its first item is the program name).
    pub fn parse_from<I, T>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::FromArgMatches;
        let matches = command().try_get_matches_from(argv)?;
        let global = match matches.subcommand() {
            Some((name, m)) if !NOT_CLIENTS.contains(&name) => {
                let mut g = Global::from_arg_matches(m)?;
                let on_line = |id: &str| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
                g.token_on_command_line = on_line("token");
                g.token_file_on_command_line = on_line("token_file");
                Some(g)
            }
            _ => None,
        };
        Ok(Cli { global, command: Line::from_arg_matches(&matches)?.command })
    }
}

/// The whole command line's definition: the commands, with the client options on every client
/// command (also after a nested subcommand: `gust token create NAME --server URL`).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut cmd = Line::command();
    let clients: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|n| !NOT_CLIENTS.contains(&n.as_str()))
        .collect();
    let global_ids: Vec<clap::Id> = Global::augment_args(clap::Command::new("global"))
        .get_arguments()
        .map(|a| a.get_id().clone())
        .collect();
    for name in &clients {
        cmd = cmd.mut_subcommand(name, |c| {
            global_ids.iter().fold(Global::augment_args(c), |c, id| c.mut_arg(id, |a| a.global(true)))
        });
    }
    cmd
}

// The options of every client command. Each is taken from the first of: the flag, its
// environment variable, the profile of the config file, the built-in default. (Not a doc
// comment: clap would make it the about text of every command these are added to.)
#[derive(Args, Debug)]
pub struct Global {
    /// The gust server to talk to [default: the profile's, else http://127.0.0.1:8080].
    #[arg(long, env = "GUST_SERVER")]
    pub server: Option<String>,
    /// Bearer token for the server's API (better: GUST_TOKEN or --token-file, which other
    /// users cannot see in the process list).
    #[arg(long, env = "GUST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the bearer token (its first line).
    #[arg(long, env = "GUST_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// A CA certificate (PEM) to trust for an https:// server, besides the system's roots:
    /// the private CA that signed the server's certificate.
    #[arg(long, env = "GUST_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// The profile of the config file to use (~/.config/gust/config.toml, or
    /// $XDG_CONFIG_HOME/gust/config.toml, or the file GUST_CONFIG names): its server,
    /// token_file and ca. Without it, the profile named "default" if there is one.
    #[arg(long, env = "GUST_PROFILE")]
    pub profile: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[arg(skip)]
    pub token_on_command_line: bool,
    #[arg(skip)]
    pub token_file_on_command_line: bool,
}

impl Global {
    /// The server and credentials, with the config file's profile filling what flags and the
    /// environment did not give.
    fn resolve(&self) -> Result<config::Resolved, Failure> {
        config::resolve(config::Given {
            server: self.server.clone(),
            token: self.token.clone().map(|t| (t, self.token_on_command_line)),
            token_file: self.token_file.clone().map(|f| (f, self.token_file_on_command_line)),
            ca: self.ca.clone(),
            profile: self.profile.clone(),
        })
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
// Parsed once at start: the server's many flags make that variant large, and boxing buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run a gust server (embedded shape: SQLite store, API and a local worker).
    Server(ServerOpts),
    /// Run a remote worker that joins a server.
    Worker(crate::worker::WorkerOpts),
    /// List workers: liveness, capacity, load, snapshot version, warm environments; and
    /// manage their credentials (`gust workers create|revoke|credentials`).
    Workers {
        #[command(subcommand)]
        action: Option<WorkersAction>,
    },
    /// Named API keys with roles: `gust token create|list|revoke` (needs an admin token).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Create a function, or change an existing one: each flag given changes what it names and
    /// nothing else (--replace: the whole configuration), with its code if --code is given, in
    /// one atomic write.
    Deploy(functions::DeployArgs),
    /// Functions: `gust function get|update-config|delete`.
    Function {
        #[command(subcommand)]
        action: functions::FunctionAction,
    },
    /// Publish $LATEST as a new immutable version.
    Publish { name: String },
    /// Aliases: `gust alias set|list|get|delete`; `gust alias NAME ALIAS --version N` sets one.
    Alias(functions::AliasCommand),
    /// Show a function's reserved concurrency, set it (`gust concurrency NAME 10`) or remove
    /// it (`--clear`).
    Concurrency(functions::ConcurrencyArgs),
    /// Function URLs: `gust url create|get|update|delete|list` (an HTTP address for a
    /// function or one of its aliases, with Lambda's auth types and CORS).
    Url {
        #[command(subcommand)]
        action: UrlAction,
    },
    /// Queues with SQS's semantics: `gust queue create|list|get|set|delete|send|receive|purge`
    /// (the SQS API serves the same queues to AWS's SDKs).
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Schedules (EventBridge Scheduler's cron/rate/at): `gust schedule
    /// create|update|get|list|delete|enable|disable|history`; each firing invokes a function
    /// asynchronously (or sends a message to a queue), once.
    Schedule {
        #[command(subcommand)]
        action: ScheduleAction,
    },
    /// Invoke a function: NAME or NAME:QUALIFIER ($LATEST, a version number or an alias).
    Invoke(InvokeArgs),
    /// Show one invocation: state, attempts, result, error and log.
    Invocation { id: String },
    /// List functions (100 a page).
    Functions {
        #[command(flatten)]
        page: paging::PageArgs,
    },
    /// List a function's published versions (100 a page).
    Versions {
        name: String,
        #[command(flatten)]
        page: paging::PageArgs,
    },
    /// Delete a function, its versions and aliases (as `gust function delete`).
    Delete { name: String },
    /// Show a function's recent invocations with their logs, newest first (10 a page); with
    /// --follow, each invocation as it ends, until interrupted.
    Logs {
        name: String,
        /// Only invocations in this state (e.g. FAILED).
        #[arg(long)]
        state: Option<String>,
        /// Keep going: print each invocation as it ends (server-sent events; reconnects
        /// without gaps if the stream drops).
        #[arg(long, short = 'f')]
        follow: bool,
        /// With --follow, start this far back (`10m`, `2h`) or at this time (ms since the
        /// epoch) instead of now.
        #[arg(long, requires = "follow")]
        since: Option<String>,
        #[command(flatten)]
        page: paging::PageArgs,
    },
    /// Print a completion script for a shell: `gust completions bash > /etc/bash_completion.d/gust`,
    /// `gust completions zsh > "${fpath[1]}/_gust"`, `gust completions fish > ~/.config/fish/completions/gust.fish`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Make a directory NAME/ with a function to build and deploy (its README says how).
    Init(init::InitArgs),
}

/// Named API keys (administrators).
#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Create a key NAME with a role and print, once, its bearer token and its SigV4 key pair
    /// (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for boto3 and the AWS CLI). The server keeps
    /// only a hash of the bearer secret; neither secret can be shown again.
    Create {
        name: String,
        /// reader: read functions, versions, aliases and invocations; invoker: reader and
        /// invoke; deployer: invoker and create, update and delete functions, versions,
        /// aliases, concurrency and event-invoke configuration; admin: everything, API keys
        /// and workers included.
        #[arg(long, value_parser = ["admin", "deployer", "invoker", "reader"])]
        role: String,
        /// Only functions whose names match this glob (`*` any run of characters, `?` one),
        /// e.g. 'team-a-*': every other function is refused and hidden from listings.
        #[arg(long, value_name = "GLOB")]
        functions: Option<String>,
    },
    /// List keys: name, role, functions, access key id, created, last used (never secrets).
    List,
    /// Revoke a key: refused at once by this server, within a second by every other server of
    /// a cluster. Its name may be used again.
    Revoke { name: String },
}

/// Function URL configs. TARGET is NAME (the function, $LATEST) or NAME:ALIAS.
#[derive(Subcommand, Debug)]
pub enum UrlAction {
    /// Give TARGET a URL and print it.
    Create {
        target: String,
        /// NONE: anyone who reaches the server may call it; AWS_IAM: only callers with a
        /// bearer token or SigV4 signature allowed to invoke the function.
        #[arg(long, value_parser = ["NONE", "AWS_IAM"])]
        auth_type: String,
        #[command(flatten)]
        cors: CorsArgs,
    },
    /// Show TARGET's URL config.
    Get { target: String },
    /// Change what is given of TARGET's URL config.
    Update {
        target: String,
        #[arg(long, value_parser = ["NONE", "AWS_IAM"])]
        auth_type: Option<String>,
        #[command(flatten)]
        cors: CorsArgs,
        /// Remove the CORS config.
        #[arg(long, conflicts_with_all = ["allow_origin", "allow_method", "allow_header", "expose_header", "max_age", "allow_credentials"])]
        no_cors: bool,
    },
    /// Delete TARGET's URL (its id is never used again).
    Delete { target: String },
    /// List a function's URLs.
    List { name: String },
}

#[derive(Subcommand, Debug)]
pub enum QueueAction {
    /// Create a queue (or show the existing one if its attributes are the same).
    Create {
        name: String,
        /// An SQS attribute, NAME=VALUE (VisibilityTimeout=60, DelaySeconds=5, RedrivePolicy=...)
        /// (repeatable).
        #[arg(long = "attribute", value_name = "NAME=VALUE")]
        attributes: Vec<String>,
    },
    /// List queues, optionally those whose names start with PREFIX.
    List { prefix: Option<String> },
    /// Show a queue's attributes and approximate counts.
    Get { name: String },
    /// Change attributes of a queue.
    Set {
        name: String,
        #[arg(long = "attribute", value_name = "NAME=VALUE", required = true)]
        attributes: Vec<String>,
    },
    /// Delete a queue with its messages.
    Delete { name: String },
    /// Send one message (its body as given) and print its id.
    Send {
        name: String,
        body: String,
        /// Seconds before it may be received (0-900; not on FIFO queues).
        #[arg(long)]
        delay: Option<u32>,
        /// A FIFO queue's message group (its messages are received in order).
        #[arg(long)]
        group: Option<String>,
        /// A FIFO queue's deduplication id (a second send within five minutes is dropped).
        #[arg(long)]
        dedup: Option<String>,
    },
    /// Receive messages (hidden for the visibility timeout) and print them.
    Receive {
        name: String,
        /// Most messages (1-10).
        #[arg(long, default_value_t = 1)]
        max: u32,
        /// Seconds to wait for a first message (0-20).
        #[arg(long, default_value_t = 0)]
        wait: u32,
        /// Delete each message once printed.
        #[arg(long)]
        delete: bool,
    },
    /// Delete every message of a queue.
    Purge { name: String },
}

#[derive(Subcommand, Debug)]
pub enum ScheduleAction {
    /// Create a schedule.
    Create(ScheduleArgs),
    /// Change what the flags given name; the rest stays.
    Update(ScheduleArgs),
    /// Show a schedule and its next firing.
    Get {
        name: String,
        #[arg(long, default_value = "default")]
        group: String,
    },
    /// List schedules (of one group with --group).
    List {
        #[arg(long)]
        group: Option<String>,
        /// Only those whose names start with this.
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        page: paging::PageArgs,
    },
    /// Delete a schedule and its history.
    Delete {
        name: String,
        #[arg(long, default_value = "default")]
        group: String,
    },
    /// Let a schedule fire again (from now on: times it was disabled for do not fire).
    Enable {
        name: String,
        #[arg(long, default_value = "default")]
        group: String,
    },
    /// Stop a schedule firing.
    Disable {
        name: String,
        #[arg(long, default_value = "default")]
        group: String,
    },
    /// A schedule's firings, newest first: scheduled time, state, invocation and its state
    /// (20 a page).
    History {
        name: String,
        #[arg(long, default_value = "default")]
        group: String,
        #[command(flatten)]
        page: paging::PageArgs,
    },
}

/// A schedule's settings, as `create` requires and `update` changes them.
#[derive(Args, Debug)]
pub struct ScheduleArgs {
    name: String,
    #[arg(long, default_value = "default")]
    group: String,
    /// `cron(MIN HOUR DOM MONTH DOW YEAR)`, `rate(N minutes|hours|days)` (or gust's own
    /// `rate(N seconds)`), or `at(YYYY-MM-DDTHH:MM:SS)`.
    #[arg(long)]
    expression: Option<String>,
    /// The function each firing invokes: NAME or NAME:QUALIFIER.
    #[arg(long, conflicts_with = "queue")]
    function: Option<String>,
    /// The queue each firing sends a message to.
    #[arg(long)]
    queue: Option<String>,
    /// What the target gets (default: an EventBridge "Scheduled Event" with the scheduled time).
    #[arg(long)]
    input: Option<String>,
    /// The IANA time zone the expression is in (default UTC).
    #[arg(long)]
    timezone: Option<String>,
    /// Where a firing goes when its target refuses it past the retry policy.
    #[arg(long)]
    dead_letter_queue: Option<String>,
    /// Fire each time at a fixed point within this many minutes after it (1-1440).
    #[arg(long, value_name = "MINUTES")]
    flexible_window: Option<u32>,
    /// Times a refused firing is tried again (0-185, default 185).
    #[arg(long)]
    max_retries: Option<u32>,
    /// Seconds a firing may wait to be delivered, also the catch-up window after downtime
    /// (60-86400, default 86400).
    #[arg(long)]
    max_event_age: Option<u32>,
    #[arg(long)]
    description: Option<String>,
    /// Create it disabled.
    #[arg(long)]
    disabled: bool,
    /// Delete the schedule once its last firing is delivered (for `at(...)`).
    #[arg(long)]
    delete_after_completion: bool,
}

/// A URL's CORS config (given at all: it replaces the current one).
#[derive(Args, Debug)]
pub struct CorsArgs {
    /// An origin allowed to call the URL from a browser, or * (repeatable).
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// A method allowed in a preflight, or * (repeatable).
    #[arg(long = "allow-method", value_name = "METHOD")]
    pub allow_method: Vec<String>,
    /// A request header allowed in a preflight, or * (repeatable).
    #[arg(long = "allow-header", value_name = "HEADER")]
    pub allow_header: Vec<String>,
    /// A response header browsers may read (repeatable).
    #[arg(long = "expose-header", value_name = "HEADER")]
    pub expose_header: Vec<String>,
    /// Seconds a browser may cache a preflight's answer.
    #[arg(long)]
    pub max_age: Option<u32>,
    /// Allow credentials (cookies) on cross-origin requests.
    #[arg(long)]
    pub allow_credentials: bool,
}

impl CorsArgs {
    /// The CORS config, if any flag was given.
    fn config(&self) -> Option<Value> {
        let given = !self.allow_origin.is_empty()
            || !self.allow_method.is_empty()
            || !self.allow_header.is_empty()
            || !self.expose_header.is_empty()
            || self.max_age.is_some()
            || self.allow_credentials;
        given.then(|| {
            json!({
                "allow_origins": self.allow_origin,
                "allow_methods": self.allow_method,
                "allow_headers": self.allow_header,
                "expose_headers": self.expose_header,
                "max_age": self.max_age,
                "allow_credentials": self.allow_credentials,
            })
        })
    }
}

/// `NAME` or `NAME:ALIAS` as the `/v1` URL path and query.
fn url_path(target: &str) -> String {
    match target.split_once(':') {
        Some((name, q)) => format!("/v1/functions/{}/url?qualifier={}", enc(name), enc(q)),
        None => format!("/v1/functions/{}/url", enc(target)),
    }
}

fn url_text(v: &Value) -> String {
    let cors = match &v["cors"] {
        Value::Null => "none".to_string(),
        c => c.to_string(),
    };
    format!(
        "{}\n  target    {}:{}\n  auth type {}\n  cors      {}",
        v["function_url"].as_str().unwrap_or("?"),
        v["function"].as_str().unwrap_or("?"),
        v["qualifier"].as_str().unwrap_or("?"),
        v["auth_type"].as_str().unwrap_or("?"),
        cors
    )
}

/// Worker credentials (administrators).
#[derive(Subcommand, Debug)]
pub enum WorkersAction {
    /// Provision a credential for worker NAME, for `gust worker --name NAME --secret-file F`
    /// on a host that should not hold the enrollment token; the secret is shown once.
    Create {
        name: String,
        /// Write the secret to this new file (mode 0600) instead of printing it.
        #[arg(long)]
        secret_file: Option<std::path::PathBuf>,
    },
    /// Revoke a worker's credential (enrolled or provisioned): its calls are refused from now
    /// on, so its attempts are recovered when their leases expire.
    Revoke { id: String },
    /// List worker credentials, never their secrets.
    Credentials,
}

#[derive(Args, Debug)]
pub struct InvokeArgs {
    /// NAME or NAME:QUALIFIER.
    pub target: String,
    /// The event, inline (JSON or any text).
    #[arg(long, conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// The event, from a file (- for stdin).
    #[arg(long)]
    pub payload_file: Option<std::path::PathBuf>,
    /// Queue the invocation and print its id instead of waiting for the result.
    #[arg(long = "async")]
    pub is_async: bool,
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// Runs a client command (`global` is `None` for those that talk to no server: completions,
/// init) and says how it went in its exit code ([`api::Kind`]).
pub fn run(global: Option<Global>, cmd: Command) -> ExitCode {
    let result = match (cmd, global) {
        (Command::Completions { shell }, _) => {
            clap_complete::generate(shell, &mut crate::cli::command(), "gust", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        (Command::Init(a), _) => init_command(a),
        (command, Some(g)) => execute(&g, command),
        (_, None) => unreachable!("client commands have client options"),
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("gust: {}", f.message);
            ExitCode::from(f.kind.exit_code())
        }
    }
}

fn init_command(a: init::InitArgs) -> Result<ExitCode, Failure> {
    let written = init::scaffold(std::path::Path::new("."), &a)?;
    println!("created {}/ ({} files: {})", a.name, written.len(), written.join(", "));
    println!("build, deploy and invoke it:\n{}", init::next_steps(&a.name, a.template).trim_end());
    Ok(ExitCode::SUCCESS)
}

fn print(global: &Global, v: &Value, text: impl FnOnce(&Value) -> String) {
    match global.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Text => println!("{}", text(v)),
    }
}

fn token_action(g: &Global, api: &Api, action: TokenAction) -> Result<(), Failure> {
    use reqwest::Method;
    match action {
        TokenAction::Create { name, role, functions } => {
            let body = json!({ "name": name, "role": role, "functions": functions });
            let v = api.json(api.req(Method::POST, "/v1/tokens").json(&body))?;
            print(g, &v, |v| {
                let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
                format!(
                    "created key {} (role {}{})\n\
                     bearer token:      {}\n\
                     access key id:     {}\n\
                     secret access key: {}\n\
                     These secrets are shown once; keep them where only their user can read them.",
                    s("name"),
                    s("role"),
                    v["functions"].as_str().map(|f| format!(", functions {f}")).unwrap_or_default(),
                    s("token"),
                    s("access_key_id"),
                    s("secret_access_key"),
                )
            });
        }
        TokenAction::List => {
            let v = api.json(api.req(Method::GET, "/v1/tokens"))?;
            print(g, &v, |v| {
                let mut out = format!(
                    "{:<24} {:<9} {:<20} {:<22} {:<20} {:<20}",
                    "NAME", "ROLE", "FUNCTIONS", "ACCESS KEY ID", "CREATED", "LAST USED"
                );
                for k in v["tokens"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "\n{:<24} {:<9} {:<20} {:<22} {:<20} {:<20}",
                        k["name"].as_str().unwrap_or("?"),
                        k["role"].as_str().unwrap_or("?"),
                        k["functions"].as_str().unwrap_or("*"),
                        k["access_key_id"].as_str().unwrap_or("?"),
                        k["created_at"].as_i64().map(utc).unwrap_or_default(),
                        k["last_used_at"].as_i64().map(utc).unwrap_or_else(|| "never".into()),
                    ));
                }
                out
            });
        }
        TokenAction::Revoke { name } => {
            api.send(api.req(Method::DELETE, &format!("/v1/tokens/{}", enc(&name))))?;
            print(g, &json!({ "revoked": name }), |_| format!("revoked key {name}"));
        }
    }
    Ok(())
}

/// Milliseconds since the epoch as `2026-11-27 01:12:04Z`.
fn utc(ms: i64) -> String {
    let iso = gust_core::lambda::timestamp(ms);
    format!("{}Z", iso.get(..19).unwrap_or(&iso).replace('T', " "))
}

fn queue_text(v: &Value) -> String {
    let mut out =
        format!("{}\n  url {}", v["name"].as_str().unwrap_or("?"), v["url"].as_str().unwrap_or("?"));
    for (k, val) in v["attributes"].as_object().into_iter().flatten() {
        out.push_str(&format!("\n  {k:<38} {}", val.as_str().unwrap_or_default()));
    }
    out
}

fn attributes_of(pairs: &[String]) -> Result<Value, Failure> {
    let map: serde_json::Map<String, Value> =
        pairs.iter().map(|p| kv(p, "--attribute").map(|(k, v)| (k, json!(v)))).collect::<Result<_, _>>()?;
    Ok(Value::Object(map))
}

fn queue(g: &Global, api: &Api, action: QueueAction) -> Result<(), Failure> {
    use reqwest::Method;
    let path = |name: &str| format!("/v1/queues/{}", enc(name));
    match action {
        QueueAction::Create { name, attributes } => {
            let body = json!({ "name": name, "attributes": attributes_of(&attributes)? });
            let v = api.json(api.req(Method::POST, "/v1/queues").json(&body))?;
            print(g, &v, queue_text);
        }
        QueueAction::List { prefix } => {
            let q = prefix.map(|p| format!("?prefix={}", enc(&p))).unwrap_or_default();
            let v = api.json(api.req(Method::GET, &format!("/v1/queues{q}")))?;
            print(g, &v, |v| {
                let names: Vec<&str> =
                    v["queues"].as_array().into_iter().flatten().filter_map(|q| q["name"].as_str()).collect();
                if names.is_empty() {
                    "no queues".to_string()
                } else {
                    names.join("\n")
                }
            });
        }
        QueueAction::Get { name } => {
            let v = api.json(api.req(Method::GET, &path(&name)))?;
            print(g, &v, queue_text);
        }
        QueueAction::Set { name, attributes } => {
            let body = json!({ "attributes": attributes_of(&attributes)? });
            let v = api.json(api.req(Method::PATCH, &path(&name)).json(&body))?;
            print(g, &v, queue_text);
        }
        QueueAction::Delete { name } => {
            api.send(api.req(Method::DELETE, &path(&name)))?;
            print(g, &json!({ "deleted": name }), |_| format!("deleted queue {name}"));
        }
        QueueAction::Send { name, body, delay, group, dedup } => {
            let mut b = json!({ "body": body });
            if let Some(d) = delay {
                b["delay_seconds"] = json!(d);
            }
            if let Some(g) = group {
                b["group_id"] = json!(g);
            }
            if let Some(d) = dedup {
                b["deduplication_id"] = json!(d);
            }
            let v = api.json(api.req(Method::POST, &format!("{}/messages", path(&name))).json(&b))?;
            print(g, &v, |v| format!("sent {}", v["message_id"].as_str().unwrap_or("?")));
        }
        QueueAction::Receive { name, max, wait, delete } => {
            let b = json!({ "max": max, "wait_seconds": wait });
            let v = api.json(api.req(Method::POST, &format!("{}/receive", path(&name))).json(&b))?;
            if delete {
                for m in v["messages"].as_array().into_iter().flatten() {
                    let receipt = m["receipt_handle"].as_str().unwrap_or_default();
                    let at = format!("{}/messages/{}", path(&name), enc(receipt));
                    api.send(api.req(Method::DELETE, &at))?;
                }
            }
            print(g, &v, |v| {
                let items = v["messages"].as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    return "no messages".to_string();
                }
                items
                    .iter()
                    .map(|m| {
                        format!(
                            "{} (received {}x)\n{}",
                            m["message_id"].as_str().unwrap_or("?"),
                            m["receive_count"],
                            m["body"].as_str().unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        QueueAction::Purge { name } => {
            api.send(api.req(Method::POST, &format!("{}/purge", path(&name))))?;
            print(g, &json!({ "purged": name }), |_| format!("purged queue {name}"));
        }
    }
    Ok(())
}

fn schedule_text(v: &Value) -> String {
    let target = v["function"]
        .as_str()
        .map(|f| format!("function {f}"))
        .or_else(|| v["queue"].as_str().map(|q| format!("queue {q}")));
    let mut out = format!(
        "{}/{}  {}  {}\n  target {}\n  next   {}",
        v["group"].as_str().unwrap_or("?"),
        v["name"].as_str().unwrap_or("?"),
        v["expression"].as_str().unwrap_or("?"),
        if v["enabled"] == json!(true) { "enabled" } else { "disabled" },
        target.unwrap_or_else(|| "?".into()),
        v["next_fire_at"].as_i64().map(utc).unwrap_or_else(|| "none".into()),
    );
    if v["timezone"] != json!("UTC") {
        out.push_str(&format!("\n  time zone {}", v["timezone"].as_str().unwrap_or("?")));
    }
    if let Some(q) = v["dead_letter_queue"].as_str() {
        out.push_str(&format!("\n  dead-letter queue {q}"));
    }
    out
}

fn schedule(g: &Global, api: &Api, action: ScheduleAction) -> Result<(), Failure> {
    use reqwest::Method;
    let path = |name: &str, group: &str| format!("/v1/schedules/{}?group={}", enc(name), enc(group));
    let set_enabled = |name: &str, group: &str, enabled: bool| -> Result<(), Failure> {
        let mut current = api.json(api.req(Method::GET, &path(name, group)))?;
        current["enabled"] = json!(enabled);
        let v = api.json(api.req(Method::PUT, &path(name, group)).json(&writable(current)))?;
        print(g, &v, schedule_text);
        Ok(())
    };
    match action {
        ScheduleAction::Create(a) => {
            let (name, group) = (a.name.clone(), a.group.clone());
            if api.transmit(api.req(Method::GET, &path(&name, &group)))?.status().is_success() {
                return Err(Failure::new(
                    Kind::Conflict,
                    format!("schedule {group}/{name} already exists: `gust schedule update` changes it"),
                ));
            }
            let body = a.apply(json!({ "enabled": true }))?;
            if body["expression"].is_null() || (body["function"].is_null() && body["queue"].is_null()) {
                return Err(Failure::usage("a new schedule needs --expression and --function or --queue"));
            }
            let v = api.json(api.req(Method::PUT, &path(&name, &group)).json(&body))?;
            print(g, &v, schedule_text);
        }
        ScheduleAction::Update(a) => {
            let (name, group) = (a.name.clone(), a.group.clone());
            let current = api.json(api.req(Method::GET, &path(&name, &group)))?;
            let body = a.apply(writable(current))?;
            let v = api.json(api.req(Method::PUT, &path(&name, &group)).json(&body))?;
            print(g, &v, schedule_text);
        }
        ScheduleAction::Get { name, group } => {
            let v = api.json(api.req(Method::GET, &path(&name, &group)))?;
            print(g, &v, schedule_text);
        }
        ScheduleAction::List { group, prefix, page } => {
            let mut q = vec![];
            if let Some(gr) = group {
                q.push(format!("group={}", enc(&gr)));
            }
            if let Some(p) = prefix {
                q.push(format!("prefix={}", enc(&p)));
            }
            let listing = paging::Listing {
                path: if q.is_empty() {
                    "/v1/schedules".into()
                } else {
                    format!("/v1/schedules?{}", q.join("&"))
                },
                items: "schedules",
                cursor_param: "after",
                cursor_of: |s| Some(format!("{}/{}", s["group"].as_str()?, s["name"].as_str()?)),
            };
            let found = listing.fetch(api, &page, 100)?;
            paging::print(g.output, &found, "schedules", |items| {
                let rows: Vec<String> = items
                    .iter()
                    .map(|s| {
                        format!(
                            "{}/{}  {}  {}",
                            s["group"].as_str().unwrap_or("?"),
                            s["name"].as_str().unwrap_or("?"),
                            s["expression"].as_str().unwrap_or("?"),
                            if s["enabled"] == json!(true) { "enabled" } else { "disabled" }
                        )
                    })
                    .collect();
                if rows.is_empty() {
                    "no schedules".to_string()
                } else {
                    rows.join("\n")
                }
            });
        }
        ScheduleAction::Delete { name, group } => {
            api.send(api.req(Method::DELETE, &path(&name, &group)))?;
            print(g, &json!({ "deleted": name }), |_| format!("deleted schedule {group}/{name}"));
        }
        ScheduleAction::Enable { name, group } => set_enabled(&name, &group, true)?,
        ScheduleAction::Disable { name, group } => set_enabled(&name, &group, false)?,
        ScheduleAction::History { name, group, page } => {
            let listing = paging::Listing {
                path: format!("/v1/schedules/{}/history?group={}", enc(&name), enc(&group)),
                items: "firings",
                cursor_param: "before",
                cursor_of: |f| f["scheduled_at"].as_i64().map(|t| t.to_string()),
            };
            let found = listing.fetch(api, &page, 20)?;
            paging::print(g.output, &found, "firings", |items| {
                let rows: Vec<String> = items
                    .iter()
                    .map(|f| {
                        let mut row = format!(
                            "{}  {:<13}",
                            f["scheduled_at"].as_i64().map(utc).unwrap_or_default(),
                            f["state"].as_str().unwrap_or("?")
                        );
                        if let Some(id) = f["invocation_id"].as_str() {
                            row.push_str(&format!(
                                "  {id} {}",
                                f["invocation_state"].as_str().unwrap_or("(pruned)")
                            ));
                        }
                        if let Some(n) = f["missed_count"].as_u64() {
                            let until = f["missed_until"].as_i64().map(utc).unwrap_or_default();
                            row.push_str(&format!("  {n} firing(s) up to {until}"));
                        }
                        if let Some(d) = f["detail"].as_str() {
                            row.push_str(&format!("  {d}"));
                        }
                        row
                    })
                    .collect();
                if rows.is_empty() {
                    "no firings yet".to_string()
                } else {
                    rows.join("\n")
                }
            });
        }
    }
    Ok(())
}

/// What of a shown schedule can be written back (`PUT` takes the settings, not the figures).
fn writable(mut shown: Value) -> Value {
    if let Some(o) = shown.as_object_mut() {
        for k in [
            "group",
            "name",
            "arn",
            "created_at",
            "updated_at",
            "next_fire_at",
            "next_fire_time",
            "target_arn",
        ] {
            o.remove(k);
        }
    }
    shown
}

impl ScheduleArgs {
    /// `base` with what the flags given change.
    fn apply(self, mut base: Value) -> Result<Value, Failure> {
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                base[k] = v;
            }
        };
        set("expression", self.expression.map(Value::from));
        set("input", self.input.map(Value::from));
        set("timezone", self.timezone.map(Value::from));
        set("dead_letter_queue", self.dead_letter_queue.map(Value::from));
        set("flexible_window_minutes", self.flexible_window.map(Value::from));
        set("max_retry_attempts", self.max_retries.map(Value::from));
        set("max_event_age_seconds", self.max_event_age.map(Value::from));
        set("description", self.description.map(Value::from));
        if self.disabled {
            base["enabled"] = json!(false);
        }
        if self.delete_after_completion {
            base["delete_after_completion"] = json!(true);
        }
        if let Some(o) = base.as_object_mut() {
            if let Some(f) = self.function {
                o.remove("queue");
                o.insert("function".into(), json!(f));
            }
            if let Some(q) = self.queue {
                o.remove("function");
                o.insert("queue".into(), json!(q));
            }
        }
        Ok(base)
    }
}

fn workers_action(g: &Global, api: &Api, action: WorkersAction) -> Result<(), Failure> {
    use reqwest::Method;
    match action {
        WorkersAction::Create { name, secret_file } => {
            // Refuse an existing file before the server issues a secret nobody would keep.
            let file = match &secret_file {
                Some(path) => Some(new_private_file(path)?),
                None => None,
            };
            let request = gust_api::ProvisionRequest { name };
            let issued = api.send(api.req(Method::POST, "/v1/workers").json(&request)).and_then(|r| {
                r.json::<gust_api::IssuedCredential>()
                    .map_err(|e| Failure::new(Kind::Server, format!("bad reply: {e}")))
            });
            let issued = match (issued, &secret_file) {
                (Ok(issued), _) => issued,
                (Err(e), Some(path)) => {
                    let _ = std::fs::remove_file(path);
                    return Err(e);
                }
                (Err(e), None) => return Err(e),
            };
            match (file, &secret_file) {
                (Some(mut f), Some(path)) => {
                    use std::io::Write;
                    writeln!(f, "{}", issued.secret)
                        .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
                    println!(
                        "worker {} may now run: gust worker --name {} --secret-file {}",
                        issued.id,
                        issued.id,
                        path.display()
                    );
                }
                _ => {
                    let v = serde_json::json!({ "id": issued.id, "secret": issued.secret });
                    print(g, &v, |v| {
                        format!("worker {}\nsecret {} (shown once: keep it in a file readable only by the worker)", v["id"].as_str().unwrap_or("?"), v["secret"].as_str().unwrap_or("?"))
                    });
                }
            }
        }
        WorkersAction::Revoke { id } => {
            api.send(api.req(Method::DELETE, &format!("/v1/workers/{}", enc(&id))))?;
            print(g, &serde_json::json!({ "revoked": id }), |_| format!("revoked worker {id}'s credential"));
        }
        WorkersAction::Credentials => {
            let v = api.json(api.req(Method::GET, "/v1/workers/credentials"))?;
            print(g, &v, |v| {
                let mut out = format!("{:<40} {:<12} {:<6}", "WORKER", "ORIGIN", "VALID");
                for c in v["credentials"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "\n{:<40} {:<12} {:<6}",
                        c["id"].as_str().unwrap_or("?"),
                        c["origin"].as_str().unwrap_or("?"),
                        if c["valid"].as_bool() == Some(true) { "yes" } else { "no" },
                    ));
                }
                out
            });
        }
    }
    Ok(())
}

/// A new file only its owner can read, for a secret.
fn new_private_file(path: &std::path::Path) -> Result<std::fs::File, Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", path.display())))
}

fn kv(s: &str, what: &str) -> Result<(String, String), Failure> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| Failure::usage(format!("{what} must look like KEY=VALUE, got {s:?}")))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn execute(g: &Global, command: Command) -> Result<ExitCode, Failure> {
    let api = Api::new(&g.resolve()?)?;
    use reqwest::Method;
    match command {
        Command::Server(_) | Command::Worker(_) => unreachable!("main runs servers and workers"),
        Command::Workers { action: Some(action) } => workers_action(g, &api, action)?,
        Command::Token { action } => token_action(g, &api, action)?,
        Command::Workers { action: None } => {
            let v = api.json(api.req(Method::GET, "/v1/workers"))?;
            print(g, &v, |v| {
                let mut out = format!(
                    "{:<28} {:<5} {:>8} {:>7} {:>5} {:>9}",
                    "WORKER", "LIVE", "CAPACITY", "RUNNING", "WARM", "SNAPSHOT"
                );
                for w in v["workers"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "\n{:<28} {:<5} {:>8} {:>7} {:>5} {:>9}",
                        w["id"].as_str().unwrap_or("?"),
                        if w["live"].as_bool() == Some(true) { "yes" } else { "no" },
                        w["capacity"].to_string(),
                        w["running"].to_string(),
                        w["warm_environments"].to_string(),
                        w["snapshot_version"].to_string()
                    ));
                }
                out
            });
        }
        Command::Deploy(a) => functions::deploy(g, &api, a)?,
        Command::Function { action } => functions::function_action(g, &api, action)?,
        Command::Publish { name } => {
            let v = api.json(api.req(Method::POST, &format!("/v1/functions/{}/versions", enc(&name))))?;
            print(g, &v, |v| format!("published {} version {}", name, v["version"]));
        }
        Command::Alias(a) => functions::alias(g, &api, a)?,
        Command::Concurrency(a) => functions::concurrency(g, &api, a)?,
        Command::Url { action } => match action {
            UrlAction::Create { target, auth_type, cors } => {
                let mut body = json!({ "auth_type": auth_type });
                if let Some(c) = cors.config() {
                    body["cors"] = c;
                }
                let v = api.json(api.req(Method::POST, &url_path(&target)).json(&body))?;
                print(g, &v, url_text);
            }
            UrlAction::Get { target } => {
                let v = api.json(api.req(Method::GET, &url_path(&target)))?;
                print(g, &v, url_text);
            }
            UrlAction::Update { target, auth_type, cors, no_cors } => {
                let mut body = json!({});
                if let Some(a) = auth_type {
                    body["auth_type"] = json!(a);
                }
                if no_cors {
                    body["cors"] = Value::Null;
                } else if let Some(c) = cors.config() {
                    body["cors"] = c;
                }
                let v = api.json(api.req(Method::PATCH, &url_path(&target)).json(&body))?;
                print(g, &v, url_text);
            }
            UrlAction::Delete { target } => {
                api.send(api.req(Method::DELETE, &url_path(&target)))?;
                print(g, &json!({ "deleted": target }), |_| format!("deleted the URL of {target}"));
            }
            UrlAction::List { name } => {
                let v = api.json(api.req(Method::GET, &format!("/v1/functions/{}/urls", enc(&name))))?;
                print(g, &v, |v| {
                    let items = v["urls"].as_array().cloned().unwrap_or_default();
                    if items.is_empty() {
                        return format!("{name} has no URLs");
                    }
                    items.iter().map(url_text).collect::<Vec<_>>().join("\n")
                });
            }
        },
        Command::Queue { action } => queue(g, &api, action)?,
        Command::Schedule { action } => schedule(g, &api, action)?,
        Command::Invoke(a) => return invoke(g, &api, a),
        Command::Invocation { id } => {
            let v = api.json(api.req(Method::GET, &format!("/v1/invocations/{}", enc(&id))))?;
            print(g, &v, invocation_text);
        }
        Command::Functions { page } => {
            let listing = paging::Listing {
                path: "/v1/functions".into(),
                items: "functions",
                cursor_param: "after",
                cursor_of: |f| f["name"].as_str().map(str::to_string),
            };
            let found = listing.fetch(&api, &page, 100)?;
            paging::print(g.output, &found, "functions", |items| {
                let mut out = format!(
                    "{:<32} {:<16} {:>8} {:>10} {:>9}",
                    "NAME", "RUNTIME", "MEMORY", "TIMEOUT", "REVISION"
                );
                for f in items {
                    out.push_str(&format!(
                        "\n{:<32} {:<16} {:>6}MB {:>10} {:>9}",
                        f["name"].as_str().unwrap_or("?"),
                        f["runtime"].as_str().unwrap_or("?"),
                        f["memory_mb"].to_string(),
                        f["timeout_ms"].as_u64().map(durations::show_ms).unwrap_or_default(),
                        f["revision"].to_string()
                    ));
                }
                out
            });
        }
        Command::Versions { name, page } => {
            let listing = paging::Listing {
                path: format!("/v1/functions/{}/versions", enc(&name)),
                items: "versions",
                cursor_param: "after",
                cursor_of: |v| v["version"].as_u64().map(|n| n.to_string()),
            };
            let found = listing.fetch(&api, &page, 100)?;
            paging::print(g.output, &found, "versions", |items| {
                let mut out = format!("{:<8} {:<66} {:>8}", "VERSION", "CODE SHA256", "MEMORY");
                for x in items {
                    out.push_str(&format!(
                        "\n{:<8} {:<66} {:>6}MB",
                        x["version"].to_string(),
                        x["code_sha256"].as_str().unwrap_or("?"),
                        x["memory_mb"].to_string()
                    ));
                }
                out
            });
        }
        Command::Delete { name } => functions::delete(g, &api, &name)?,
        Command::Logs { name, state, follow: true, since, .. } => {
            follow_logs(g, &api, &name, state.as_deref(), since.as_deref())?;
        }
        Command::Logs { name, state, page, .. } => {
            let mut path = format!("/v1/functions/{}/invocations", enc(&name));
            if let Some(s) = state {
                path.push_str(&format!("?state={}", enc(&s)));
            }
            let listing = paging::Listing {
                path,
                items: "invocations",
                cursor_param: "before",
                cursor_of: |i| i["invocation_id"].as_str().map(str::to_string),
            };
            let found = listing.fetch(&api, &page, 10)?;
            paging::print(g.output, &found, "invocations", |items| {
                if items.is_empty() {
                    return "no invocations".to_string();
                }
                items.iter().map(invocation_text).collect::<Vec<_>>().join("\n\n")
            });
        }
        Command::Completions { .. } | Command::Init(_) => {
            unreachable!("run handles commands without a server")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `s` with control characters escaped: a function's output must not drive the terminal of
/// whoever reads its log (escape sequences can retitle the window, set the clipboard or forge
/// lines).
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\t' { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

/// `gust logs NAME --follow`: each invocation as it ends, from the server's event stream,
/// reconnecting after the last event seen if the stream drops (a deleted function ends it).
fn follow_logs(
    g: &Global, api: &Api, name: &str, state: Option<&str>, since: Option<&str>,
) -> Result<(), Failure> {
    use std::io::{BufRead as _, Write as _};
    let mut query = Vec::new();
    if let Some(s) = state {
        query.push(format!("state={}", enc(s)));
    }
    if let Some(s) = since {
        query.push(format!("since={}", enc(s)));
    }
    let path = format!("/v1/functions/{}/logs?{}", enc(name), query.join("&"));
    let mut last_id: Option<String> = None;
    let mut drops = 0;
    loop {
        // A stream has no end to time out at.
        let mut rb =
            api.req(reqwest::Method::GET, &path).timeout(std::time::Duration::from_secs(365 * 86_400));
        if let Some(id) = &last_id {
            rb = rb.header("last-event-id", id);
        }
        let resp = match api.transmit(rb) {
            Ok(r) => api.check(r)?,
            Err(e) if drops > 0 && drops < 30 => {
                drops += 1;
                eprintln!("gust: {}; reconnecting", e.message);
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut id = None;
        for line in std::io::BufReader::new(resp).lines() {
            let Ok(line) = line else { break };
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_string());
            } else if let Some(data) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(data).map_err(|e| {
                    Failure::new(api::Kind::Server, format!("a bad event from the server: {e}"))
                })?;
                let mut out = std::io::stdout().lock();
                let text = match g.output {
                    Output::Json => v.to_string(),
                    Output::Text => format!("{}\n", invocation_text(&v)),
                };
                if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                    return Ok(()); // the reader went away (`| head`)
                }
                last_id = id.take();
            }
        }
        // The stream ended (the server restarted, a proxy cut it): again from the last event.
        drops = 1;
    }
}

fn invocation_text(v: &Value) -> String {
    let target = match v["qualifier"].as_str() {
        Some(q) => format!("{}:{q}", v["function"].as_str().unwrap_or("?")),
        None => v["function"].as_str().unwrap_or("?").to_string(),
    };
    let mut out = format!(
        "invocation {}\n  function  {} (ran {})\n  mode      {}\n  state     {} after {} attempt(s)",
        v["invocation_id"].as_str().unwrap_or("?"),
        target,
        v["executed_version"].as_str().unwrap_or("?"),
        v["mode"].as_str().unwrap_or("?"),
        v["state"].as_str().unwrap_or("?"),
        v["attempts"],
    );
    if let Some(r) = v["result"].as_str() {
        out.push_str(&format!("\n  result    {}", printable(r)));
    }
    if v["error"].is_object() {
        out.push_str(&format!(
            "\n  error     {}: {}",
            printable(v["error"]["errorType"].as_str().unwrap_or("?")),
            printable(v["error"]["errorMessage"].as_str().unwrap_or("?"))
        ));
    }
    let log = v["log"].as_str().unwrap_or("");
    if !log.is_empty() {
        out.push_str("\n  log:");
        for line in log.lines() {
            out.push_str(&format!("\n    {}", printable(line)));
        }
    }
    if let Some(report) = v["report_line"].as_str() {
        out.push_str(&format!("\n  {}", printable(report).replace("\\t", "  ")));
    }
    out
}

fn invoke(g: &Global, api: &Api, a: InvokeArgs) -> Result<ExitCode, Failure> {
    let (name, qualifier) = match a.target.split_once(':') {
        Some((n, q)) => (n.to_string(), Some(q.to_string())),
        None => (a.target.clone(), None),
    };
    let payload: Vec<u8> = match (&a.payload, &a.payload_file) {
        (Some(p), _) => p.clone().into_bytes(),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            buf
        }
        (None, Some(f)) => {
            std::fs::read(f).map_err(|e| Failure::usage(format!("cannot read {}: {e}", f.display())))?
        }
        (None, None) => b"{}".to_vec(),
    };
    let mut path = format!("/v1/functions/{}/invoke", enc(&name));
    if let Some(q) = &qualifier {
        path.push_str(&format!("?qualifier={}", enc(q)));
    }
    let mut rb = api
        .req(reqwest::Method::POST, &path)
        .header("invocation-type", if a.is_async { "async" } else { "sync" })
        .header("content-type", "application/json")
        .body(payload);
    if let Some(k) = &a.idempotency_key {
        rb = rb.header("idempotency-key", k);
    }
    let resp = api.send(rb)?;
    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let id = header("gust-invocation-id").unwrap_or_default();
    if a.is_async {
        let v: Value = resp.json()?;
        print(g, &v, |v| v["invocation_id"].as_str().unwrap_or("?").to_string());
        return Ok(ExitCode::SUCCESS);
    }
    let function_error = header("gust-function-error");
    let version = header("gust-executed-version").unwrap_or_default();
    let body = resp.bytes()?;
    match g.output {
        Output::Json => {
            let v = json!({
                "invocation_id": id,
                "executed_version": version,
                "function_error": function_error,
                "body": String::from_utf8_lossy(&body),
            });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Output::Text => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&body)?;
            if !body.ends_with(b"\n") {
                out.write_all(b"\n")?;
            }
        }
    }
    if let Some(kind) = function_error {
        eprintln!("gust: function error ({kind}) in invocation {id}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn control_characters_from_a_function_are_escaped() {
        assert_eq!(super::printable("ok\tfine"), "ok\tfine");
        let hostile = "\u{1b}]0;PWNED\u{7}\u{1b}[1A  state SUCCEEDED";
        let shown = super::printable(hostile);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert!(shown.contains("PWNED"));
    }
}
