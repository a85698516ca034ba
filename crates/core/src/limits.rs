//! Every limit gust enforces, named once. None is unlimited; each can be overridden in the
//! server's configuration where the doc comment says so.

/// Largest synchronous invocation payload and result, as on AWS Lambda (6 MB).
pub const MAX_SYNC_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// Largest asynchronous invocation payload, as on AWS Lambda (1 MB). Async payloads are stored.
pub const MAX_ASYNC_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Largest code artifact accepted by `PUT /v1/functions/{name}/code`.
pub const MAX_CODE_BYTES: usize = 50 * 1024 * 1024;
/// Largest function result kept (sync results are returned, async results stored).
pub const MAX_RESULT_BYTES: usize = 6 * 1024 * 1024;
/// The most a function may stream to a caller reading it (Lambda's response streaming limit);
/// what is collected for the record stays within the result limit.
pub const MAX_STREAMED_BYTES: usize = 20 * 1024 * 1024;
/// Log bytes kept per invocation: the tail survives, the head is dropped.
pub const MAX_LOG_BYTES: usize = 64 * 1024;
/// Largest JSON body accepted by the control-plane endpoints.
pub const MAX_CONFIG_BODY_BYTES: usize = 256 * 1024;

/// Memory bounds of a function, in MB (Lambda's range).
pub const MIN_MEMORY_MB: u32 = 16;
pub const MAX_MEMORY_MB: u32 = 4096;
pub const DEFAULT_MEMORY_MB: u32 = 128;

/// Timeout bounds of a function, in milliseconds (Lambda allows up to 15 minutes).
pub const MIN_TIMEOUT_MS: u64 = 1;
pub const MAX_TIMEOUT_MS: u64 = 15 * 60 * 1000;
pub const DEFAULT_TIMEOUT_MS: u64 = 3_000;

/// Environment variables: at most this many, and this many bytes in all (Lambda: 4 KB).
pub const MAX_ENV_VARS: usize = 64;
pub const MAX_ENV_BYTES: usize = 4 * 1024;

/// Async retries after a function error: Lambda's default and maximum.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
pub const MAX_RETRIES: u32 = 2;
/// How old an async event may get before it is dropped as EXPIRED (Lambda: 60 s to 6 h).
pub const DEFAULT_MAX_EVENT_AGE_S: u64 = 6 * 3600;
pub const MIN_MAX_EVENT_AGE_S: u64 = 1;
pub const MAX_MAX_EVENT_AGE_S: u64 = 6 * 3600;
/// First retry delay after a function error; doubled for each further retry.
pub const DEFAULT_RETRY_BASE_DELAY_MS: u64 = 1_000;
pub const MAX_RETRY_DELAY_MS: u64 = 5 * 60 * 1000;
/// Attempts lost to a dead worker (lease expiry) before an async invocation is failed: bounds
/// the damage of an event that crashes whatever runs it.
pub const MAX_LOST_ATTEMPTS: u32 = 5;

/// Lease granted on claim and renewed while the function runs. Short, so a crashed worker's
/// work is retried within seconds rather than after the function timeout.
pub const DEFAULT_LEASE_MS: i64 = 5_000;
/// Shortest lease a server may be configured with (`--lease-ms`): it is renewed a few times per
/// lease (`protocol::RENEWALS_PER_LEASE`), and each renewal is a round trip.
pub const MIN_LEASE_MS: u64 = 300;
/// Aliases may route to at most this many extra versions.
pub const MAX_ROUTING_EXTRA_VERSIONS: usize = 1;
/// Page size bounds for list endpoints.
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;
/// How long a PLACED invocation may wait for its worker to claim it before it is re-queued.
pub const DEFAULT_PLACEMENT_TIMEOUT_MS: i64 = 5_000;
/// Most rows one recovery sweep changes per kind of recovery (keeps transactions short).
pub const RECOVERY_BATCH: usize = 1_000;

/// Longest function description.
pub const MAX_DESCRIPTION_BYTES: usize = 256;
/// Entries in a function's `allowed_outbound_hosts`, and the length of each.
pub const MAX_OUTBOUND_HOSTS: usize = 32;
pub const MAX_OUTBOUND_HOST_BYTES: usize = 256;
/// Highest reserved concurrency a function may ask for.
pub const MAX_RESERVED_CONCURRENCY: u32 = 1000;

/// A process function's /tmp (Lambda's `EphemeralStorage.Size`, in MB): default and bounds.
pub const DEFAULT_EPHEMERAL_STORAGE_MB: u32 = 512;
pub const MIN_EPHEMERAL_STORAGE_MB: u32 = 512;
pub const MAX_EPHEMERAL_STORAGE_MB: u32 = 10_240;
