//! Function URLs: their configs (one per `$LATEST` or alias) and finding one by id at the edge.
//!
//! Every server answers every URL: the edge looks an id up in the control cache, which holds
//! the whole URL table, loaded on the first lookup after the control plane changed (so an
//! unknown or guessed id costs no store read, and another server's new URL is served once the
//! snapshot poller sees the change).

use std::sync::Arc;

use gust_core::names::validate_function_name;
use gust_core::url::{is_url_id, url_id_from, URL_ID_LEN};
use gust_core::{AuthType, Cors, FunctionUrl, InvokeMode, Qualifier, UrlConfig};
use gust_store::ops::UrlLookup;
use gust_store::Kind;
use rand::RngCore;

use crate::cache::UrlTable;
use crate::{Service, ServiceError};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// What an update changes; `None` keeps the current value (Lambda's UpdateFunctionUrlConfig).
#[derive(Debug, Clone, Default)]
pub struct UrlPatch {
    pub auth_type: Option<AuthType>,
    /// `Some(None)` removes the CORS config.
    pub cors: Option<Option<Cors>>,
    pub invoke_mode: Option<InvokeMode>,
}

/// `$LATEST` or an alias: a URL never belongs to a numbered version (as in Lambda).
fn url_qualifier(qualifier: Option<&str>) -> Result<String> {
    match Qualifier::parse(qualifier)? {
        Qualifier::Version(n) => Err(ServiceError::InvalidRequest(format!(
            "a function URL belongs to the function ($LATEST) or an alias, not to version {n}"
        ))),
        q => Ok(q.as_string()),
    }
}

fn check_config(config: &UrlConfig) -> Result<()> {
    config.validate().map_err(|e| ServiceError::InvalidRequest(e.0))
}

impl Service {
    /// Creates the URL of a function (`qualifier` `None`: `$LATEST`) or of one of its aliases.
    pub async fn create_url(
        &self, function: &str, qualifier: Option<&str>, config: UrlConfig,
    ) -> Result<FunctionUrl> {
        validate_function_name(function)?;
        let qualifier = url_qualifier(qualifier)?;
        check_config(&config)?;
        let mut random = [0u8; URL_ID_LEN];
        rand::thread_rng().fill_bytes(&mut random);
        let now = self.clock.now();
        let url = FunctionUrl {
            url_id: url_id_from(&random),
            function: function.to_string(),
            qualifier,
            config,
            created_at: now,
            updated_at: now,
        };
        let result = self.store.create_url(url).await;
        self.cache.invalidate();
        Ok(result?)
    }

    pub async fn get_url(&self, function: &str, qualifier: Option<&str>) -> Result<FunctionUrl> {
        validate_function_name(function)?;
        let qualifier = url_qualifier(qualifier)?;
        let found =
            self.store.urls(UrlLookup::Target { function: function.into(), qualifier: qualifier.clone() });
        found.await?.pop().ok_or_else(|| ServiceError::NotFound {
            kind: Kind::FunctionUrl,
            name: format!("{function}:{qualifier}"),
        })
    }

    /// Changes what `patch` names of a URL's config; the rest stays.
    pub async fn update_url(
        &self, function: &str, qualifier: Option<&str>, patch: UrlPatch,
    ) -> Result<FunctionUrl> {
        let current = self.get_url(function, qualifier).await?;
        let mut config = current.config;
        if let Some(a) = patch.auth_type {
            config.auth_type = a;
        }
        if let Some(c) = patch.cors {
            config.cors = c;
        }
        if let Some(m) = patch.invoke_mode {
            config.invoke_mode = m;
        }
        check_config(&config)?;
        let result = self.store.update_url(function, &current.qualifier, config, self.clock.now()).await;
        self.cache.invalidate();
        Ok(result?)
    }

    pub async fn delete_url(&self, function: &str, qualifier: Option<&str>) -> Result<()> {
        validate_function_name(function)?;
        let qualifier = url_qualifier(qualifier)?;
        let result = self.store.delete_url(function, &qualifier).await;
        self.cache.invalidate();
        Ok(result?)
    }

    /// A function's URLs, `$LATEST` first, then its aliases by name.
    pub async fn list_urls(&self, function: &str) -> Result<Vec<FunctionUrl>> {
        validate_function_name(function)?;
        self.store
            .get_function(function)
            .await?
            .ok_or_else(|| ServiceError::NotFound { kind: Kind::Function, name: function.to_string() })?;
        Ok(self.store.urls(UrlLookup::Function(function.to_string())).await?)
    }

    /// The URL with id `url_id`, from the control cache; `None` if there is none.
    pub async fn url_by_id(&self, url_id: &str) -> Result<Option<Arc<FunctionUrl>>> {
        if !is_url_id(url_id) {
            return Ok(None);
        }
        if let Some(table) = self.cache.urls() {
            return Ok(table.get(url_id).cloned());
        }
        let generation = self.cache.generation();
        let all = self.store.urls(UrlLookup::All).await?;
        let table: Arc<UrlTable> =
            Arc::new(all.into_iter().map(|u| (u.url_id.clone(), Arc::new(u))).collect());
        let found = table.get(url_id).cloned();
        self.cache.insert_urls(generation, table);
        Ok(found)
    }
}
