//! The control plane: functions, code, versions and aliases. Every write is validated in full
//! before the store is touched, and is one CAS-guarded store transaction.

use std::sync::Arc;

use bytes::Bytes;
use gust_core::limits::{MAX_CODE_BYTES, MAX_PAGE_SIZE};
use gust_core::names::{validate_alias_name, validate_function_name};
use gust_core::{
    Alias, FunctionConfig, FunctionSpec, InvocationId, InvocationRecord, Routing, Runtime, Version,
};
use gust_store::{InvocationFilter, Kind};

use crate::{Service, ServiceError};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// A function as `GET /v1/functions/{name}` shows it.
#[derive(Debug, Clone)]
pub struct FunctionView {
    pub config: FunctionConfig,
    pub aliases: Vec<Alias>,
}

#[derive(Debug, Clone)]
pub struct CodeUploaded {
    pub config: FunctionConfig,
    pub sha256: String,
    pub size: usize,
}

/// What a deploy of config (and code) wrote.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub config: FunctionConfig,
    /// The size of the code uploaded with it, if any was.
    pub code_size: Option<usize>,
}

/// How often a change of one setting is tried again when another writer moved the function's
/// revision between its read and its write (each try re-reads).
const SPEC_CHANGE_ATTEMPTS: u32 = 5;

fn not_found(kind: Kind, name: impl Into<String>) -> ServiceError {
    ServiceError::NotFound { kind, name: name.into() }
}

impl Service {
    pub async fn put_function(
        &self, name: &str, spec: FunctionSpec, expect: Option<u64>,
    ) -> Result<FunctionConfig> {
        validate_function_name(name)?;
        spec.validate()?;
        self.check_runtime(spec.runtime).await?;
        let now = self.clock.now();
        let result = self.store.put_function(name, spec, expect, now).await;
        self.cache.invalidate();
        Ok(result?)
    }

    /// Stores new code for a function: validated and compiled first, then stored by sha256,
    /// then `$LATEST` points at it. Invalid code leaves nothing behind.
    pub async fn put_code(&self, name: &str, code: Bytes, expect: Option<u64>) -> Result<CodeUploaded> {
        validate_function_name(name)?;
        let function = self.store.get_function(name).await?.ok_or_else(|| not_found(Kind::Function, name))?;
        if let Some(expected) = expect {
            if expected != function.revision {
                return Err(ServiceError::RevisionMismatch { expected, actual: function.revision });
            }
        }
        let (sha256, size) = self.store_code(function.spec.runtime, code).await?;
        let result = self.store.set_function_code(name, &sha256, expect, self.clock.now()).await;
        self.cache.invalidate();
        Ok(CodeUploaded { config: result?, sha256, size })
    }

    /// Creates a function with its code in one step: the code is validated and stored first,
    /// then the function appears with it, atomically (an existing name is a conflict).
    pub async fn create_function(&self, name: &str, spec: FunctionSpec, code: Bytes) -> Result<CodeUploaded> {
        validate_function_name(name)?;
        spec.validate()?;
        self.check_runtime(spec.runtime).await?;
        let (sha256, size) = self.store_code(spec.runtime, code).await?;
        let result = self.store.create_function(name, spec, &sha256, self.clock.now()).await;
        self.cache.invalidate();
        match result {
            Ok(config) => Ok(CodeUploaded { config, sha256, size }),
            Err(gust_store::StoreError::RevisionMismatch { .. }) => {
                Err(ServiceError::Conflict(format!("function {name} already exists")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces a function's configuration and, if `code` is given, its code, in one CAS-guarded
    /// store transaction (`expect`: the revision it must be at, 0 for "must not exist yet").
    /// The code is validated, prepared for the new runtime and stored by sha256 first, as
    /// [`Service::put_code`] does; invalid code or a stale revision leaves everything as it was.
    pub async fn deploy_function(
        &self, name: &str, spec: FunctionSpec, code: Option<Bytes>, expect: Option<u64>,
    ) -> Result<Deployed> {
        validate_function_name(name)?;
        spec.validate()?;
        self.check_runtime(spec.runtime).await?;
        let Some(code) = code else {
            let config = self.put_function(name, spec, expect).await?;
            return Ok(Deployed { config, code_size: None });
        };
        // A revision already gone is refused before the code is compiled; the transaction
        // checks it again, and that check is the one that counts.
        if let Some(expected) = expect {
            let actual = self.store.get_function(name).await?.map_or(0, |f| f.revision);
            if expected != actual {
                return Err(ServiceError::RevisionMismatch { expected, actual });
            }
        }
        let (sha256, size) = self.store_code(spec.runtime, code).await?;
        let result = self.store.put_function_with_code(name, spec, &sha256, expect, self.clock.now()).await;
        self.cache.invalidate();
        Ok(Deployed { config: result?, code_size: Some(size) })
    }

    /// Sets (or with `None` removes) a function's reserved concurrency, keeping the rest of
    /// its configuration. With `expect` the function must be at that revision; without, a
    /// write that loses a race with another writer is tried again on what that one wrote.
    pub async fn set_reserved_concurrency(
        &self, name: &str, reserved: Option<u32>, expect: Option<u64>,
    ) -> Result<FunctionConfig> {
        let mut attempts = 0;
        loop {
            let current = self.get_function(name).await?.config;
            if let Some(expected) = expect.filter(|e| *e != current.revision) {
                return Err(ServiceError::RevisionMismatch { expected, actual: current.revision });
            }
            let mut spec = current.spec;
            spec.reserved_concurrency = reserved;
            match self.put_function(name, spec, Some(current.revision)).await {
                Err(ServiceError::RevisionMismatch { .. })
                    if expect.is_none() && attempts + 1 < SPEC_CHANGE_ATTEMPTS =>
                {
                    attempts += 1
                }
                other => return other,
            }
        }
    }

    /// Refuses a runtime that neither this server's own worker nor any live remote worker can
    /// run, so a deploy fails clearly instead of its first invocation. With no local worker and
    /// no live worker there is nothing to judge by, and the work waits for a worker.
    async fn check_runtime(&self, runtime: Runtime) -> Result<()> {
        if self.cfg.local_worker && self.executor.runs(runtime) {
            return Ok(());
        }
        let since = self.clock.now() - crate::workers::LIVENESS_BOUND.as_millis() as i64;
        let live = self.store.list_workers(since).await?;
        if live.iter().any(|w| w.runtimes.iter().any(|r| r.same_family(runtime)))
            || (!self.cfg.local_worker && live.is_empty())
        {
            return Ok(());
        }
        let how = match runtime {
            Runtime::Python { .. } => {
                "it needs a Python interpreter with awslambdaric: start gust with --python PATH (the start-up log says what it found)"
            }
            Runtime::Node { .. } => {
                "it needs node and AWS's aws-lambda-ric package: start gust with --node-ric DIR (the start-up log says what it found)"
            }
            _ => "no worker reports it",
        };
        Err(ServiceError::RuntimeUnavailable(format!("runtime {} cannot run here: {how}", runtime.name())))
    }

    /// Validates and prepares code for `runtime`, then stores it by sha256.
    async fn store_code(&self, runtime: gust_core::Runtime, code: Bytes) -> Result<(String, usize)> {
        if code.len() > MAX_CODE_BYTES {
            return Err(ServiceError::TooLarge { what: "code", size: code.len(), limit: MAX_CODE_BYTES });
        }
        if code.is_empty() {
            return Err(ServiceError::InvalidCode("the code is empty".into()));
        }
        // A disk below its reserve refuses before anything is compiled or unpacked onto it.
        self.store.check_space()?;
        let sha256 = gust_store::sha256_hex(&code);
        let size = code.len();
        self.executor.prepare_code(runtime, &sha256, code.clone()).await?;
        self.store.put_artifact(code).await?;
        Ok((sha256, size))
    }

    /// Deletes one published version (not while an alias routes to it).
    pub async fn delete_version(&self, name: &str, number: u64) -> Result<()> {
        validate_function_name(name)?;
        let result = self.store.delete_version(name, number, self.clock.now()).await;
        self.cache.invalidate();
        Ok(result?)
    }

    pub async fn get_version(&self, name: &str, number: u64) -> Result<Version> {
        validate_function_name(name)?;
        self.store
            .get_version(name, number)
            .await?
            .ok_or_else(|| not_found(Kind::Version, format!("{name}:{number}")))
    }

    pub async fn get_function(&self, name: &str) -> Result<FunctionView> {
        validate_function_name(name)?;
        let config = self.store.get_function(name).await?.ok_or_else(|| not_found(Kind::Function, name))?;
        let aliases = self.store.list_aliases(name).await?;
        Ok(FunctionView { config, aliases })
    }

    pub async fn list_functions(&self, after: Option<&str>, limit: usize) -> Result<Vec<FunctionConfig>> {
        Ok(self.store.list_functions(after, limit.clamp(1, MAX_PAGE_SIZE)).await?)
    }

    /// Deletes a function, its versions and aliases; its pending invocations fail.
    pub async fn delete_function(&self, name: &str, expect: Option<u64>) -> Result<u64> {
        validate_function_name(name)?;
        let result = self.store.delete_function(name, expect, self.clock.now()).await;
        self.cache.invalidate();
        if result.is_ok() {
            // Its figures go with it: labels are a bounded budget.
            self.executor.forget_function(name);
            self.throttles.forget(name);
        }
        Ok(result?)
    }

    /// Publishes `$LATEST`; `description` is the version's own (else the function's).
    pub async fn publish(
        &self, name: &str, expect: Option<u64>, description: Option<&str>,
    ) -> Result<Version> {
        validate_function_name(name)?;
        if description.is_some_and(|d| d.len() > gust_core::limits::MAX_DESCRIPTION_BYTES) {
            return Err(gust_core::SpecError::Description.into());
        }
        let result = self.store.publish_version(name, expect, description, self.clock.now()).await;
        self.cache.invalidate();
        Ok(result?)
    }

    pub async fn list_versions(&self, name: &str, after: Option<u64>, limit: usize) -> Result<Vec<Version>> {
        validate_function_name(name)?;
        self.store.get_function(name).await?.ok_or_else(|| not_found(Kind::Function, name))?;
        Ok(self.store.list_versions(name, after, limit.clamp(1, MAX_PAGE_SIZE)).await?)
    }

    pub async fn put_alias(
        &self, name: &str, alias: &str, routing: Routing, description: &str, expect: Option<u64>,
    ) -> Result<Alias> {
        validate_function_name(name)?;
        validate_alias_name(alias)?;
        routing.validate()?;
        if description.len() > gust_core::limits::MAX_DESCRIPTION_BYTES {
            return Err(gust_core::SpecError::Description.into());
        }
        let result = self.store.put_alias(name, alias, routing, description, expect, self.clock.now()).await;
        self.cache.invalidate();
        Ok(result?)
    }

    pub async fn get_alias(&self, name: &str, alias: &str) -> Result<Alias> {
        validate_function_name(name)?;
        validate_alias_name(alias)?;
        self.store
            .get_alias(name, alias)
            .await?
            .ok_or_else(|| not_found(Kind::Alias, format!("{name}:{alias}")))
    }

    pub async fn list_aliases(&self, name: &str) -> Result<Vec<Alias>> {
        validate_function_name(name)?;
        self.store.get_function(name).await?.ok_or_else(|| not_found(Kind::Function, name))?;
        Ok(self.store.list_aliases(name).await?)
    }

    pub async fn delete_alias(&self, name: &str, alias: &str, expect: Option<u64>) -> Result<()> {
        validate_function_name(name)?;
        validate_alias_name(alias)?;
        let result = self.store.delete_alias(name, alias, expect, self.clock.now()).await;
        self.cache.invalidate();
        Ok(result?)
    }

    pub async fn get_invocation(&self, id: &str) -> Result<InvocationRecord> {
        let valid =
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        if !valid {
            return Err(not_found(Kind::Invocation, id.chars().take(80).collect::<String>()));
        }
        self.dispatch.written_behind().await;
        self.store
            .get_invocation(&InvocationId(id.to_string()))
            .await?
            .ok_or_else(|| not_found(Kind::Invocation, id))
    }

    pub async fn list_invocations(
        &self, name: &str, mut filter: InvocationFilter,
    ) -> Result<Vec<InvocationRecord>> {
        validate_function_name(name)?;
        filter.limit = filter.limit.clamp(1, MAX_PAGE_SIZE);
        self.dispatch.written_behind().await;
        Ok(self.store.list_invocations(name, filter).await?)
    }

    /// Drops cached control-plane state if the store's snapshot moved (another server wrote).
    pub async fn refresh_snapshot(&self) -> Result<u64> {
        let v = self.store.snapshot_version().await?;
        self.cache.observe_snapshot(v);
        Ok(v)
    }

    pub(crate) async fn cached_function(&self, name: &str) -> Result<Arc<FunctionConfig>> {
        if let Some(f) = self.cache.function(name) {
            return Ok(f);
        }
        let generation = self.cache.generation();
        let f =
            Arc::new(self.store.get_function(name).await?.ok_or_else(|| not_found(Kind::Function, name))?);
        self.cache.insert_function(generation, f.clone());
        Ok(f)
    }

    pub(crate) async fn cached_alias(&self, name: &str, alias: &str) -> Result<Arc<Alias>> {
        if let Some(a) = self.cache.alias(name, alias) {
            return Ok(a);
        }
        let generation = self.cache.generation();
        let a = Arc::new(
            self.store
                .get_alias(name, alias)
                .await?
                .ok_or_else(|| not_found(Kind::Alias, format!("{name}:{alias}")))?,
        );
        self.cache.insert_alias(generation, a.clone());
        Ok(a)
    }
}
