//! The control-plane operations of the AWS API: functions, code, versions, aliases, reserved
//! concurrency, event-invoke config and account settings.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine as _;
use bytes::Bytes;
use gust_core::lambda::split_function_name;
use gust_core::limits::{DEFAULT_MAX_EVENT_AGE_S, DEFAULT_MAX_RETRIES, MAX_CONFIG_BODY_BYTES};
use gust_core::names::LATEST;
use gust_core::{Action, FunctionConfig, FunctionSpec, Qualifier, Routing, Runtime, Version};
use gust_service::ServiceError;
use serde::Deserialize;
use serde_json::{json, Value};

use super::views::{self, Shown};
use super::{non_latest, target, truncate, AwsError, AwsResult, QueryMap, MAX_AWS_BODY_BYTES};
use crate::access::Access;
use crate::body::read_bounded;
use crate::AppState;

/// Real Lambda returns at most 50 items a page.
const MAX_ITEMS: usize = 50;
/// Reserved concurrency gust leaves unreserved, as Lambda's minimum of 100 out of 1000.
const ACCOUNT_CONCURRENCY: u32 = 1000;
const MIN_UNRESERVED: u32 = 100;

pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    body: Body, limit: usize,
) -> Result<T, AwsError> {
    let bytes = read_bounded(body, limit, "the request body").await?;
    let bytes = if bytes.is_empty() { Bytes::from_static(b"{}") } else { bytes };
    serde_json::from_slice(&bytes).map_err(|e| {
        AwsError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            format!("malformed JSON body: {e}"),
        )
    })
}

/// The size of a code artifact (cached: artifacts never change).
pub(crate) async fn code_size(s: &AppState, sha256: Option<&str>) -> u64 {
    let Some(sha) = sha256 else { return 0 };
    if let Some(n) = s.code_sizes.lock().expect("not poisoned").get(sha) {
        return *n;
    }
    let n = s.service.store().get_artifact(sha).await.map(|b| b.len() as u64).unwrap_or(0);
    let mut sizes = s.code_sizes.lock().expect("not poisoned");
    if sizes.len() > 10_000 {
        sizes.clear();
    }
    sizes.insert(sha.to_string(), n);
    n
}

async fn latest_json(s: &AppState, f: &FunctionConfig, pending: bool) -> Value {
    let mut shown = Shown::latest(f, code_size(s, f.code_sha256.as_deref()).await);
    shown.pending = pending;
    views::configuration(&shown)
}

async fn version_json(s: &AppState, v: &Version) -> Value {
    views::configuration(&Shown::version(v, code_size(s, Some(&v.code_sha256)).await))
}

/// The configuration a qualifier names: `$LATEST`, a version, or the primary version of an alias.
async fn configuration_of(s: &AppState, name: &str, qualifier: Option<String>) -> Result<Value, AwsError> {
    let q = Qualifier::parse(qualifier.as_deref()).map_err(|e| AwsError::invalid(e.to_string()))?;
    Ok(match q {
        Qualifier::Latest => latest_json(s, &s.service.get_function(name).await?.config, false).await,
        Qualifier::Version(n) => version_json(s, &s.service.get_version(name, n).await?).await,
        Qualifier::Alias(a) => {
            let alias = s.service.get_alias(name, &a).await?;
            version_json(s, &s.service.get_version(name, alias.routing.version).await?).await
        }
    })
}

/// The function revision a client's `RevisionId` stands for (412 if it is not the current one).
fn expect_revision(f: &FunctionConfig, revision_id: Option<&str>) -> Result<Option<u64>, AwsError> {
    match revision_id {
        None => Ok(None),
        Some(id) if id == views::function_revision_id(f) => Ok(Some(f.revision)),
        Some(_) => Err(AwsError::precondition()),
    }
}

/// Applies `change` to `$LATEST`'s spec under the revision CAS (retried when another writer
/// moved the revision and the client did not pin one).
async fn mutate_spec(
    s: &AppState, name: &str, revision_id: Option<&str>,
    change: impl Fn(&mut FunctionSpec) -> Result<(), AwsError>,
) -> Result<FunctionConfig, AwsError> {
    let mut attempts = 0;
    loop {
        let current = s.service.get_function(name).await?.config;
        let pinned = expect_revision(&current, revision_id)?;
        let mut spec = current.spec.clone();
        change(&mut spec)?;
        match s.service.put_function(name, spec, Some(current.revision)).await {
            Err(ServiceError::RevisionMismatch { .. }) if pinned.is_none() && attempts < 5 => attempts += 1,
            Err(ServiceError::RevisionMismatch { .. }) => return Err(AwsError::precondition()),
            other => return Ok(other?),
        }
    }
}

fn decode_zip(b64: &str) -> Result<Bytes, AwsError> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map(Bytes::from)
        .map_err(|_| AwsError::invalid("Code.ZipFile must be base64"))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CodeIn {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    s3_key: Option<String>,
    image_uri: Option<String>,
}

impl CodeIn {
    fn zip(&self) -> Result<Bytes, AwsError> {
        if self.s3_bucket.is_some() || self.s3_key.is_some() {
            return Err(AwsError::invalid("gust has no S3: upload the package inline as ZipFile"));
        }
        if self.image_uri.is_some() {
            return Err(AwsError::invalid(
                "gust runs zip packages and WebAssembly modules, not container images",
            ));
        }
        decode_zip(self.zip_file.as_deref().ok_or_else(|| AwsError::invalid("Code.ZipFile is required"))?)
    }
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct EnvironmentIn {
    variables: BTreeMap<String, String>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "PascalCase")]
struct EphemeralStorageIn {
    size: u32,
}

/// Configuration fields Create and UpdateFunctionConfiguration share.
#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct ConfigIn {
    role: Option<String>,
    runtime: Option<String>,
    handler: Option<String>,
    description: Option<String>,
    timeout: Option<u64>,
    memory_size: Option<u32>,
    ephemeral_storage: Option<EphemeralStorageIn>,
    environment: Option<EnvironmentIn>,
    layers: Option<Vec<String>>,
    dead_letter_config: Option<Value>,
    package_type: Option<String>,
    architectures: Option<Vec<String>>,
}

impl ConfigIn {
    fn apply(self, spec: &mut FunctionSpec, has_code: bool) -> Result<(), AwsError> {
        if self.layers.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(AwsError::invalid("gust has no layers: include the dependencies in the package"));
        }
        if let Some(d) = &self.dead_letter_config {
            spec.retry.dead_letter_queue = match d.get("TargetArn") {
                None | Some(Value::Null) => spec.retry.dead_letter_queue.take(),
                Some(Value::String(arn)) if arn.is_empty() => None,
                Some(Value::String(arn)) => match gust_core::queue::queue_of_arn(arn) {
                    Some(q) => Some(q.to_string()),
                    None => {
                        return Err(AwsError::invalid(format!(
                            "DeadLetterConfig.TargetArn must be a gust queue's SQS ARN (gust has no SNS); {:?} is not one",
                            truncate(arn)
                        )))
                    }
                },
                Some(_) => return Err(AwsError::invalid("DeadLetterConfig.TargetArn must be a string")),
            };
        }
        if self.package_type.as_deref().is_some_and(|p| p != "Zip") {
            return Err(AwsError::invalid("PackageType must be Zip: gust does not run container images"));
        }
        if self.architectures.as_ref().is_some_and(|a| a.iter().any(|a| a != "x86_64")) {
            return Err(AwsError::invalid("Architectures must be [\"x86_64\"] on this machine"));
        }
        if let Some(r) = self.runtime {
            let runtime = Runtime::try_from(r).map_err(AwsError::invalid)?;
            if has_code && runtime.is_process() != spec.runtime.is_process() {
                return Err(AwsError::invalid(
                    "switching between the wasm runtime and a zip runtime needs new code: use UpdateFunctionCode after creating a new function",
                ));
            }
            spec.runtime = runtime;
        }
        if let Some(h) = self.handler {
            spec.handler = Some(h);
        }
        if let Some(d) = self.description {
            spec.description = d;
        }
        if let Some(r) = self.role {
            spec.role = Some(r);
        }
        if let Some(t) = self.timeout {
            if !(1..=900).contains(&t) {
                return Err(AwsError::invalid(format!("Timeout must be within [1, 900] seconds, got {t}")));
            }
            spec.timeout_ms = t * 1000;
        }
        if let Some(m) = self.memory_size {
            spec.memory_mb = m;
        }
        if let Some(e) = self.ephemeral_storage {
            spec.ephemeral_storage_mb = e.size;
        }
        if let Some(e) = self.environment {
            spec.env = e.variables;
        }
        spec.validate().map_err(|e| AwsError::invalid(e.to_string()))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateIn {
    function_name: String,
    #[serde(default)]
    code: CodeIn,
    #[serde(default)]
    publish: bool,
    #[serde(flatten)]
    config: ConfigIn,
}

pub(crate) async fn create(State(s): State<AppState>, access: Access, body: Body) -> AwsResult {
    let req: CreateIn = json_body(body, MAX_AWS_BODY_BYTES).await?;
    let (name, qualifier) = target(&req.function_name, None)?;
    access.check(Action::Deploy, Some(&name))?;
    if qualifier.is_some() {
        return Err(AwsError::invalid("FunctionName must not carry a qualifier here"));
    }
    if req.config.runtime.is_none() {
        return Err(AwsError::invalid(
            "Runtime is required for a Zip package (e.g. python3.12, provided.al2023, wasm)",
        ));
    }
    let mut spec = FunctionSpec::default();
    req.config.apply(&mut spec, false)?;
    access.check_destinations(&spec.retry)?;
    let zip = req.code.zip()?;
    let created = s.service.create_function(&name, spec, zip).await.map_err(|e| match e {
        ServiceError::Conflict(_) => AwsError::conflict(format!("Function already exist: {name}")),
        e => e.into(),
    })?;
    let body = if req.publish {
        version_json(&s, &s.service.publish(&name, Some(created.config.revision), None).await?).await
    } else {
        latest_json(&s, &created.config, true).await
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A key limited to some functions sees only those, and markers name only those.
pub(crate) async fn list(State(s): State<AppState>, access: Access, Query(q): Query<QueryMap>) -> AwsResult {
    let max = page_size(&q)?;
    let all_versions = q.get("FunctionVersion").is_some_and(|v| v == "ALL");
    let marker = q.get("Marker").filter(|m| !m.is_empty()).map(String::as_str);
    let (page, next) = access.functions_page(&s.service, marker, max).await?;
    let mut functions = Vec::with_capacity(page.len());
    for f in &page {
        functions.push(latest_json(&s, f, false).await);
        if all_versions {
            for v in s.service.list_versions(&f.name, None, MAX_ITEMS).await? {
                functions.push(version_json(&s, &v).await);
            }
        }
    }
    Ok(Json(json!({ "Functions": functions, "NextMarker": next })).into_response())
}

fn page_size(q: &QueryMap) -> Result<usize, AwsError> {
    match q.get("MaxItems") {
        None => Ok(MAX_ITEMS),
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .map(|n| n.min(MAX_ITEMS))
            .ok_or_else(|| AwsError::invalid("MaxItems must be within [1, 10000]")),
    }
}

pub(crate) async fn get(
    State(s): State<AppState>, Path(raw): Path<String>, Query(q): Query<QueryMap>,
) -> AwsResult {
    let (name, qualifier) = target(&raw, q.get("Qualifier").map(String::as_str))?;
    let configuration = configuration_of(&s, &name, qualifier).await?;
    let f = s.service.get_function(&name).await?.config;
    let mut body = json!({
        "Configuration": configuration,
        "Code": { "RepositoryType": "S3" },
        "Tags": {},
    });
    if let Some(n) = f.spec.reserved_concurrency {
        body["Concurrency"] = json!({ "ReservedConcurrentExecutions": n });
    }
    Ok(Json(body).into_response())
}

pub(crate) async fn get_configuration(
    State(s): State<AppState>, Path(raw): Path<String>, Query(q): Query<QueryMap>,
) -> AwsResult {
    let (name, qualifier) = target(&raw, q.get("Qualifier").map(String::as_str))?;
    Ok(Json(configuration_of(&s, &name, qualifier).await?).into_response())
}

pub(crate) async fn delete(
    State(s): State<AppState>, Path(raw): Path<String>, Query(q): Query<QueryMap>,
) -> AwsResult {
    let (name, qualifier) = target(&raw, q.get("Qualifier").map(String::as_str))?;
    match qualifier.as_deref().map(|q| Qualifier::parse(Some(q))) {
        None => {
            s.service.delete_function(&name, None).await?;
        }
        Some(Ok(Qualifier::Version(n))) => s.service.delete_version(&name, n).await?,
        Some(_) => return Err(AwsError::invalid(
            "Qualifier must be a version number: delete an alias with DeleteAlias, $LATEST with the function",
        )),
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateCodeIn {
    #[serde(flatten)]
    code: CodeIn,
    #[serde(default)]
    publish: bool,
    #[serde(default)]
    dry_run: bool,
    revision_id: Option<String>,
    architectures: Option<Vec<String>>,
}

pub(crate) async fn update_code(State(s): State<AppState>, Path(raw): Path<String>, body: Body) -> AwsResult {
    let (name, _) = target(&raw, None)?;
    let req: UpdateCodeIn = json_body(body, MAX_AWS_BODY_BYTES).await?;
    if req.architectures.as_ref().is_some_and(|a| a.iter().any(|a| a != "x86_64")) {
        return Err(AwsError::invalid("Architectures must be [\"x86_64\"] on this machine"));
    }
    let zip = req.code.zip()?;
    let current = s.service.get_function(&name).await?.config;
    let expect = expect_revision(&current, req.revision_id.as_deref())?;
    if req.dry_run {
        return Ok(Json(latest_json(&s, &current, false).await).into_response());
    }
    let uploaded =
        s.service.put_code(&name, zip, expect.or(Some(current.revision))).await.map_err(|e| match e {
            ServiceError::RevisionMismatch { .. } if expect.is_none() => AwsError::conflict(format!(
                "The operation cannot be performed at this time. An update is in progress for resource: {}",
                gust_core::lambda::function_arn(&name, None)
            )),
            e => e.into(),
        })?;
    let body = if req.publish {
        version_json(&s, &s.service.publish(&name, Some(uploaded.config.revision), None).await?).await
    } else {
        latest_json(&s, &uploaded.config, false).await
    };
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateConfigIn {
    revision_id: Option<String>,
    #[serde(flatten)]
    config: ConfigIn,
}

pub(crate) async fn update_configuration(
    State(s): State<AppState>, access: Access, Path(raw): Path<String>, body: Body,
) -> AwsResult {
    let (name, _) = target(&raw, None)?;
    let req: UpdateConfigIn = json_body(body, MAX_CONFIG_BODY_BYTES).await?;
    let f = mutate_spec(&s, &name, req.revision_id.as_deref(), |spec| {
        req.config.clone().apply(spec, true)?;
        Ok(access.check_destinations(&spec.retry)?)
    })
    .await?;
    Ok(Json(latest_json(&s, &f, false).await).into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct PublishIn {
    code_sha256: Option<String>,
    description: Option<String>,
    revision_id: Option<String>,
}

pub(crate) async fn publish(State(s): State<AppState>, Path(raw): Path<String>, body: Body) -> AwsResult {
    let (name, _) = target(&raw, None)?;
    let req: PublishIn = json_body(body, MAX_CONFIG_BODY_BYTES).await?;
    let current = s.service.get_function(&name).await?.config;
    let expect = expect_revision(&current, req.revision_id.as_deref())?;
    if let Some(sha) = &req.code_sha256 {
        if current.code_sha256.as_deref().map(views::code_sha256_b64).as_deref() != Some(sha.as_str()) {
            return Err(AwsError::precondition());
        }
    }
    let v = s.service.publish(&name, expect, req.description.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(version_json(&s, &v).await)).into_response())
}

pub(crate) async fn list_versions(
    State(s): State<AppState>, Path(raw): Path<String>, Query(q): Query<QueryMap>,
) -> AwsResult {
    let (name, _) = target(&raw, None)?;
    let max = page_size(&q)?;
    let marker = q.get("Marker").filter(|m| !m.is_empty());
    // The listing is `$LATEST` then versions in order; the marker is the last Version shown.
    let mut items = Vec::new();
    let after = match marker.map(String::as_str) {
        None => {
            items.push(latest_json(&s, &s.service.get_function(&name).await?.config, false).await);
            None
        }
        Some(LATEST) => None,
        Some(m) => {
            Some(m.parse::<u64>().map_err(|_| AwsError::invalid("Marker is not one this API returned"))?)
        }
    };
    for v in &s.service.list_versions(&name, after, max + 1).await? {
        items.push(version_json(&s, v).await);
    }
    let more = items.len() > max;
    items.truncate(max);
    let next = more.then(|| items.last().and_then(|v| v["Version"].as_str().map(str::to_string))).flatten();
    Ok(Json(json!({ "Versions": items, "NextMarker": next })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RoutingIn {
    additional_version_weights: BTreeMap<String, f64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct AliasIn {
    name: Option<String>,
    function_version: Option<String>,
    description: Option<String>,
    routing_config: Option<RoutingIn>,
    revision_id: Option<String>,
}

fn version_number(v: &str) -> Result<u64, AwsError> {
    if v == LATEST {
        return Err(AwsError::invalid(
            "gust aliases point at published versions: publish a version, then alias it",
        ));
    }
    v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        AwsError::invalid(format!("FunctionVersion {:?} is not a version number", truncate(v)))
    })
}

fn routing(primary: u64, weights: &RoutingIn) -> Result<Routing, AwsError> {
    let mut r = Routing::single(primary);
    for (v, w) in &weights.additional_version_weights {
        r.weights.insert(version_number(v)?, *w);
    }
    Ok(r)
}

pub(crate) async fn create_alias(
    State(s): State<AppState>, Path(raw): Path<String>, body: Body,
) -> AwsResult {
    let (name, _) = target(&raw, None)?;
    let req: AliasIn = json_body(body, MAX_CONFIG_BODY_BYTES).await?;
    let alias = req.name.ok_or_else(|| AwsError::invalid("Name is required"))?;
    let version = version_number(
        req.function_version.as_deref().ok_or_else(|| AwsError::invalid("FunctionVersion is required"))?,
    )?;
    let r = routing(version, &req.routing_config.unwrap_or_default())?;
    let description = req.description.as_deref().unwrap_or("");
    let a = s.service.put_alias(&name, &alias, r, description, Some(0)).await.map_err(|e| match e {
        ServiceError::RevisionMismatch { .. } => AwsError::conflict(format!(
            "Alias already exists: {}",
            gust_core::lambda::function_arn(&name, Some(&alias))
        )),
        e => e.into(),
    })?;
    Ok((StatusCode::CREATED, Json(views::alias(&a))).into_response())
}

pub(crate) async fn get_alias(
    State(s): State<AppState>, Path((raw, alias)): Path<(String, String)>,
) -> AwsResult {
    let (name, _) = target(&raw, None)?;
    Ok(Json(views::alias(&s.service.get_alias(&name, &alias).await?)).into_response())
}

pub(crate) async fn update_alias(
    State(s): State<AppState>, Path((raw, alias)): Path<(String, String)>, body: Body,
) -> AwsResult {
    let (name, _) = target(&raw, None)?;
    let req: AliasIn = json_body(body, MAX_CONFIG_BODY_BYTES).await?;
    let current = s.service.get_alias(&name, &alias).await?;
    if req.revision_id.as_deref().is_some_and(|id| id != views::alias_revision_id(&current)) {
        return Err(AwsError::precondition());
    }
    let primary = match &req.function_version {
        Some(v) => version_number(v)?,
        None => current.routing.version,
    };
    let r = match &req.routing_config {
        Some(w) => routing(primary, w)?,
        None => Routing { version: primary, weights: current.routing.weights.clone() },
    };
    let description = req.description.as_deref().unwrap_or(&current.description);
    let a = s.service.put_alias(&name, &alias, r, description, Some(current.revision)).await.map_err(
        |e| match e {
            ServiceError::RevisionMismatch { .. } => AwsError::precondition(),
            e => e.into(),
        },
    )?;
    Ok(Json(views::alias(&a)).into_response())
}

pub(crate) async fn delete_alias(
    State(s): State<AppState>, Path((raw, alias)): Path<(String, String)>,
) -> AwsResult {
    let (name, _) = target(&raw, None)?;
    s.service.delete_alias(&name, &alias, None).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn list_aliases(
    State(s): State<AppState>, Path(raw): Path<String>, Query(q): Query<QueryMap>,
) -> AwsResult {
    let (name, _) = target(&raw, None)?;
    let version =
        q.get("FunctionVersion").filter(|v| !v.is_empty()).map(|v| version_number(v)).transpose()?;
    let aliases: Vec<Value> = s
        .service
        .list_aliases(&name)
        .await?
        .iter()
        .filter(|a| version.is_none_or(|v| a.routing.versions().any(|x| x == v)))
        .map(views::alias)
        .collect();
    Ok(Json(json!({ "Aliases": aliases })).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConcurrencyIn {
    reserved_concurrent_executions: i64,
}

pub(crate) async fn put_concurrency(
    State(s): State<AppState>, Path(raw): Path<String>, body: Body,
) -> AwsResult {
    let (name, _) = target(&raw, None)?;
    let req: ConcurrencyIn = json_body(body, MAX_CONFIG_BODY_BYTES).await?;
    let max = ACCOUNT_CONCURRENCY - MIN_UNRESERVED;
    let n = u32::try_from(req.reserved_concurrent_executions)
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| {
            AwsError::invalid(format!(
                "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [{MIN_UNRESERVED}]."
            ))
        })?;
    s.service.set_reserved_concurrency(&name, Some(n), None).await?;
    Ok(Json(json!({ "ReservedConcurrentExecutions": n })).into_response())
}

pub(crate) async fn get_concurrency(State(s): State<AppState>, Path(raw): Path<String>) -> AwsResult {
    let (name, _) = target(&raw, None)?;
    let f = s.service.get_function(&name).await?.config;
    Ok(Json(match f.spec.reserved_concurrency {
        Some(n) => json!({ "ReservedConcurrentExecutions": n }),
        None => json!({}),
    })
    .into_response())
}

pub(crate) async fn delete_concurrency(State(s): State<AppState>, Path(raw): Path<String>) -> AwsResult {
    let (name, _) = target(&raw, None)?;
    s.service.set_reserved_concurrency(&name, None, None).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct DestinationIn {
    destination: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct DestinationConfigIn {
    on_success: Option<DestinationIn>,
    on_failure: Option<DestinationIn>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct EventConfigIn {
    maximum_retry_attempts: Option<u32>,
    maximum_event_age_in_seconds: Option<u64>,
    destination_config: Option<DestinationConfigIn>,
}

/// Event-invoke config lives on `$LATEST` (frozen into versions published afterwards).
fn event_target(raw: &str, q: &QueryMap) -> Result<String, AwsError> {
    let (name, qualifier) = target(raw, q.get("Qualifier").map(String::as_str))?;
    if non_latest(qualifier).is_some() {
        return Err(AwsError::invalid(
            "gust keeps event-invoke config on $LATEST and freezes it into versions at publish: omit the Qualifier",
        ));
    }
    Ok(name)
}

fn destination(d: &Option<DestinationIn>) -> Result<Option<String>, AwsError> {
    let Some(arn) = d.as_ref().and_then(|d| d.destination.as_deref()).filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let refuse = || {
        AwsError::invalid(format!(
            "gust delivers destinations to gust functions (arn:aws:lambda:REGION:ACCOUNT:function:NAME) and gust queues (arn:aws:sqs:REGION:ACCOUNT:NAME); {:?} is neither",
            truncate(arn)
        ))
    };
    if let Some(queue) = gust_core::queue::queue_of_arn(arn) {
        return Ok(Some(gust_core::queue::queue_arn(queue)));
    }
    if !arn.starts_with("arn:aws:lambda:") {
        return Err(refuse());
    }
    match split_function_name(arn) {
        Some((name, None | Some(LATEST))) => Ok(Some(name.to_string())),
        _ => Err(refuse()),
    }
}

/// Sets the event-invoke config: `merge` keeps what the request omits (UpdateFunctionEventInvokeConfig),
/// otherwise omitted settings go back to their defaults (Put overwrites).
async fn set_event_config(
    s: &AppState, access: &Access, name: &str, req: EventConfigIn, merge: bool,
) -> AwsResult {
    if req.maximum_retry_attempts.is_some_and(|n| n > 2) {
        return Err(AwsError::invalid("MaximumRetryAttempts must be within [0, 2]"));
    }
    if req.maximum_event_age_in_seconds.is_some_and(|n| !(60..=21_600).contains(&n)) {
        return Err(AwsError::invalid("MaximumEventAgeInSeconds must be within [60, 21600]"));
    }
    let dc = req.destination_config.clone().unwrap_or_default();
    let (on_success, on_failure) = (destination(&dc.on_success)?, destination(&dc.on_failure)?);
    // A destination is a function this one invokes, or a queue it sends to: the caller must be
    // able to invoke it, or to send.
    let wanted = gust_core::RetryPolicy {
        on_success: on_success.clone(),
        on_failure: on_failure.clone(),
        ..Default::default()
    };
    access.check_destinations(&wanted)?;
    let now = s.service.now();
    let f = mutate_spec(s, name, None, |spec| {
        let r = &mut spec.retry;
        if !merge {
            r.max_retries = DEFAULT_MAX_RETRIES;
            r.max_event_age_s = DEFAULT_MAX_EVENT_AGE_S;
            r.on_success = None;
            r.on_failure = None;
        }
        if let Some(n) = req.maximum_retry_attempts {
            r.max_retries = n;
        }
        if let Some(n) = req.maximum_event_age_in_seconds {
            r.max_event_age_s = n;
        }
        if !merge || dc.on_success.is_some() {
            r.on_success = on_success.clone();
        }
        if !merge || dc.on_failure.is_some() {
            r.on_failure = on_failure.clone();
        }
        r.configured_at = Some(now);
        Ok(())
    })
    .await?;
    Ok(Json(views::event_invoke_config(&f)).into_response())
}

pub(crate) async fn put_event_config(
    State(s): State<AppState>, access: Access, Path(raw): Path<String>, Query(q): Query<QueryMap>, body: Body,
) -> AwsResult {
    let name = event_target(&raw, &q)?;
    set_event_config(&s, &access, &name, json_body(body, MAX_CONFIG_BODY_BYTES).await?, false).await
}

pub(crate) async fn update_event_config(
    State(s): State<AppState>, access: Access, Path(raw): Path<String>, Query(q): Query<QueryMap>, body: Body,
) -> AwsResult {
    let name = event_target(&raw, &q)?;
    set_event_config(&s, &access, &name, json_body(body, MAX_CONFIG_BODY_BYTES).await?, true).await
}

pub(crate) async fn get_event_config(
    State(s): State<AppState>, Path(raw): Path<String>, Query(q): Query<QueryMap>,
) -> AwsResult {
    let name = event_target(&raw, &q)?;
    let f = s.service.get_function(&name).await?.config;
    if f.spec.retry.configured_at.is_none() {
        return Err(AwsError::not_found(format!(
            "The function {} doesn't have an EventInvokeConfig",
            gust_core::lambda::function_arn(&name, Some(LATEST))
        )));
    }
    Ok(Json(views::event_invoke_config(&f)).into_response())
}

pub(crate) async fn delete_event_config(
    State(s): State<AppState>, Path(raw): Path<String>, Query(q): Query<QueryMap>,
) -> AwsResult {
    let name = event_target(&raw, &q)?;
    let f = s.service.get_function(&name).await?.config;
    if f.spec.retry.configured_at.is_none() {
        return Err(AwsError::not_found("the function has no EventInvokeConfig"));
    }
    mutate_spec(&s, &name, None, |spec| {
        let base_delay_ms = spec.retry.base_delay_ms;
        spec.retry = gust_core::RetryPolicy { base_delay_ms, ..gust_core::RetryPolicy::default() };
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn list_event_configs(State(s): State<AppState>, Path(raw): Path<String>) -> AwsResult {
    let (name, _) = target(&raw, None)?;
    let f = s.service.get_function(&name).await?.config;
    let configs: Vec<Value> =
        f.spec.retry.configured_at.map(|_| views::event_invoke_config(&f)).into_iter().collect();
    Ok(Json(json!({ "FunctionEventInvokeConfigs": configs })).into_response())
}

/// Usage counts only the functions the caller covers.
pub(crate) async fn account_settings(
    State(s): State<AppState>, access: Access, _headers: HeaderMap,
) -> AwsResult {
    let (mut count, mut code, mut reserved) = (0u64, 0u64, 0u64);
    let mut after: Option<String> = None;
    loop {
        let page = s.service.list_functions(after.as_deref(), 1000).await?;
        for f in page.iter().filter(|f| access.covers(&f.name)) {
            count += 1;
            code += code_size(&s, f.code_sha256.as_deref()).await;
            reserved += u64::from(f.spec.reserved_concurrency.unwrap_or(0));
        }
        match page.last() {
            Some(f) if page.len() == 1000 => after = Some(f.name.clone()),
            _ => break,
        }
    }
    Ok(Json(json!({
        "AccountLimit": {
            "TotalCodeSize": 80_530_636_800u64,
            "CodeSizeUnzipped": 262_144_000u64,
            "CodeSizeZipped": gust_core::limits::MAX_CODE_BYTES,
            "ConcurrentExecutions": ACCOUNT_CONCURRENCY,
            "UnreservedConcurrentExecutions": u64::from(ACCOUNT_CONCURRENCY).saturating_sub(reserved),
        },
        "AccountUsage": { "TotalCodeSize": code, "FunctionCount": count },
    }))
    .into_response())
}
