//! Listings that never stop short silently: a page that is not the last says how to go on
//! (`more: --after X` on stderr, or `"next"` in JSON), and `--all` follows every page.

use gust_core::limits::MAX_PAGE_SIZE;
use serde_json::{json, Value};

use super::api::{Api, Failure};
use super::{enc, Output};

/// One listing of the `/v1` API.
pub struct Listing {
    /// Its path, with the filters of its query if any (`?state=FAILED`), without the page.
    pub path: String,
    /// The key of the items in the answer (`functions`).
    pub items: &'static str,
    /// The query parameter that continues after an item: `after`, or `before` for
    /// invocations (newest first: the next page is older).
    pub cursor_param: &'static str,
    /// The cursor of an item: what the next page continues after.
    pub cursor_of: fn(&Value) -> Option<String>,
}

// The page flags every listing takes.
#[derive(clap::Args, Debug, Clone)]
pub struct PageArgs {
    /// Most items to show (a page; with --all, the size of each page fetched).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Continue after this item (what a `more:` line names).
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
    /// Follow every page to the end.
    #[arg(long, conflicts_with = "after")]
    pub all: bool,
}

/// What was listed, and where the listing goes on if it was cut short.
pub struct Page {
    pub items: Vec<Value>,
    pub next: Option<String>,
}

impl Page {
    /// The answer as JSON, shaped as the API's (`{"functions": [...], "next": ...}`).
    pub fn json(&self, items: &str) -> Value {
        json!({ items: self.items, "next": self.next })
    }
}

impl Listing {
    fn fetch_one(
        &self, api: &Api, size: usize, after: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), Failure> {
        let sep = if self.path.contains('?') { '&' } else { '?' };
        let mut path = format!("{}{sep}limit={size}", self.path);
        if let Some(a) = after {
            path.push_str(&format!("&{}={}", self.cursor_param, enc(a)));
        }
        let v = api.json(api.req(reqwest::Method::GET, &path))?;
        let items = v[self.items].as_array().cloned().unwrap_or_default();
        let next = match &v["next"] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        Ok((items, next))
    }

    /// A page of `limit` items after `after`, or every item with `all`. One more item than
    /// shown is asked for, so a page that ends exactly at the end does not claim more.
    pub fn fetch(&self, api: &Api, page: &PageArgs, default_limit: usize) -> Result<Page, Failure> {
        let limit = page.limit.unwrap_or(default_limit).clamp(1, MAX_PAGE_SIZE);
        if page.all {
            let (mut items, mut cursor) = (Vec::new(), None::<String>);
            loop {
                let (got, next) = self.fetch_one(api, limit, cursor.as_deref())?;
                items.extend(got);
                match next {
                    // A cursor that does not move would loop forever: stop there.
                    Some(n) if Some(&n) != cursor.as_ref() => cursor = Some(n),
                    _ => return Ok(Page { items, next: None }),
                }
            }
        }
        let ask = (limit + 1).min(MAX_PAGE_SIZE);
        let (mut items, server_next) = self.fetch_one(api, ask, page.after.as_deref())?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().and_then(self.cursor_of)
        } else if ask == limit {
            server_next
        } else {
            None
        };
        Ok(Page { items, next })
    }
}

/// Prints a page: JSON with its `next`, or text with a `more:` line on stderr.
pub fn print(output: Output, page: &Page, items: &str, text: impl FnOnce(&[Value]) -> String) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&page.json(items)).unwrap_or_default()),
        Output::Text => {
            println!("{}", text(&page.items));
            if let Some(next) = &page.next {
                eprintln!("more: --after {next}   (--all lists everything)");
            }
        }
    }
}
