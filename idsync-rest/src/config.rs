//! [`RestConfig`]: what a `[providers.NAME]` table of `type = "rest"` holds.
//!
//! Every secret is named by reference (`*_env`: an environment variable, `*_file`: a
//! file), never written in the config; [`RestConfig::relative_to`] resolves secret files
//! against the config file's folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use idsync_core::secret::SecretRef;
use idsync_core::{Error, Result, Transform};
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn default_timeout() -> u64 {
    30
}

/// A generic REST/JSON directory: its base URL, auth, and one [`EntityConfig`] per entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {
    /// The API's base URL (`https://hr.example.com/api/v1`); paths are appended to it.
    pub base_url: String,
    /// A name for errors and reports (default: the base URL's host).
    #[serde(default)]
    pub instance: Option<String>,
    /// Accept `http://` to a host that is not loopback.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Timeout of one request in seconds (30).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The largest answer body in bytes (8 MiB).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Requests per second the API allows (the rate-limit layer's default).
    #[serde(default)]
    pub requests_per_second: Option<u32>,
    /// How requests authenticate (default: no auth).
    #[serde(default)]
    pub auth: AuthConfig,
    /// Headers sent with every request (never secrets: use `auth`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The org tree; without it the directory is accounts only.
    #[serde(default)]
    pub orgs: Option<EntityConfig>,
    /// The people.
    pub accounts: EntityConfig,
}

/// Authentication; each secret by reference (`*_env` or `*_file`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// No authentication.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// Environment variable holding the token.
        token_env: Option<String>,
        /// File holding the token.
        token_file: Option<PathBuf>,
    },
    /// `Authorization: Basic` (RFC 7617).
    Basic {
        /// The user name.
        username: String,
        /// Environment variable holding the password.
        password_env: Option<String>,
        /// File holding the password.
        password_file: Option<PathBuf>,
    },
    /// An API key in a header (`X-API-Key: <key>`).
    ApiKey {
        /// The header's name.
        header: String,
        /// Environment variable holding the key.
        key_env: Option<String>,
        /// File holding the key.
        key_file: Option<PathBuf>,
    },
    /// OAuth2 client credentials (RFC 6749 §4.4): the token is cached, refreshed before it
    /// expires, and fetched again once when the API answers 401.
    Oauth2 {
        /// The token endpoint (absolute URL).
        token_url: String,
        /// The client id.
        client_id: String,
        /// Environment variable holding the client secret.
        client_secret_env: Option<String>,
        /// File holding the client secret.
        client_secret_file: Option<PathBuf>,
        /// The scope to ask for.
        #[serde(default)]
        scope: Option<String>,
        /// Send id and secret as HTTP basic auth (`client_secret_basic`) instead of form
        /// fields.
        #[serde(default)]
        basic: bool,
    },
}

impl AuthConfig {
    /// The secret's reference (`None` for no auth), checked: exactly one of `*_env` and
    /// `*_file`.
    pub fn secret_ref(&self) -> Result<Option<SecretRef>> {
        let r = match self {
            AuthConfig::None => return Ok(None),
            AuthConfig::Bearer {
                token_env,
                token_file,
            } => SecretRef::required("token", token_env.as_deref(), token_file.as_deref()),
            AuthConfig::Basic {
                password_env,
                password_file,
                ..
            } => SecretRef::required(
                "password",
                password_env.as_deref(),
                password_file.as_deref(),
            ),
            AuthConfig::ApiKey {
                key_env, key_file, ..
            } => SecretRef::required("key", key_env.as_deref(), key_file.as_deref()),
            AuthConfig::Oauth2 {
                client_secret_env,
                client_secret_file,
                ..
            } => SecretRef::required(
                "client_secret",
                client_secret_env.as_deref(),
                client_secret_file.as_deref(),
            ),
        };
        r.map(Some)
    }

    fn relative_to(&mut self, dir: &Path) {
        let file = match self {
            AuthConfig::None => None,
            AuthConfig::Bearer { token_file, .. } => token_file.as_mut(),
            AuthConfig::Basic { password_file, .. } => password_file.as_mut(),
            AuthConfig::ApiKey { key_file, .. } => key_file.as_mut(),
            AuthConfig::Oauth2 {
                client_secret_file, ..
            } => client_secret_file.as_mut(),
        };
        if let Some(f) = file
            && f.is_relative()
        {
            *f = dir.join(&*f);
        }
    }
}

fn default_page_size() -> usize {
    100
}

/// One entity kind (orgs or accounts): where it is listed, how pages go, how fields map,
/// and optionally how it is written and read incrementally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityConfig {
    /// The listing's path (`/employees`), appended to the base URL.
    pub path: String,
    /// Fixed query parameters of the listing (`{ status = "all" }`).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// JSON pointer to the item array in a page (`/data`); empty: the body is the array.
    #[serde(default)]
    pub items: String,
    /// Items per page asked for (100), and the largest page served.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// How pages follow each other (default: a single unpaged answer).
    #[serde(default)]
    pub pagination: Pagination,
    /// The path of one entity (`/employees/{anchor}`; the anchor is percent-escaped) for
    /// lookups. Without it, lookups read the listing.
    #[serde(default)]
    pub item_path: Option<String>,
    /// JSON pointer to the entity in the item answer (default: the body).
    #[serde(default)]
    pub item: String,
    /// Model field → where it is in an item. `anchor` is required. Keys are the model's
    /// field names (`username`, `email`, `orgs`, `manager`, `name`, `parent`, `order`,
    /// `attrs.NAME`).
    pub fields: BTreeMap<String, FieldSpec>,
    /// JSON pointer to an object whose every key becomes an attribute (`attrs.KEY`), and
    /// where unmapped attributes are written.
    #[serde(default)]
    pub attrs: Option<String>,
    /// How the account status is read and written (accounts only).
    #[serde(default)]
    pub status: Option<StatusSpec>,
    /// Create endpoint.
    #[serde(default)]
    pub create: Option<WriteSpec>,
    /// Update endpoint (also used for moves, disable and enable).
    #[serde(default)]
    pub update: Option<WriteSpec>,
    /// Delete endpoint.
    #[serde(default)]
    pub delete: Option<WriteSpec>,
    /// Incremental reads by an "updated since" parameter.
    #[serde(default)]
    pub incremental: Option<Incremental>,
}

/// Where a model field is in an item: a JSON pointer, or a pointer with transforms (the
/// mapping transforms of jobs, applied when reading).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldSpec {
    /// `"/login"`.
    Pointer(String),
    /// `{ pointer = "/mail", transforms = ["trim", "lowercase"] }`.
    Full {
        /// The JSON pointer.
        pointer: String,
        /// Applied in order when reading.
        #[serde(default)]
        transforms: Vec<Transform>,
        /// Only read, never written (a computed field).
        #[serde(default)]
        read_only: bool,
    },
}

impl FieldSpec {
    /// The JSON pointer.
    pub fn pointer(&self) -> &str {
        match self {
            FieldSpec::Pointer(p) | FieldSpec::Full { pointer: p, .. } => p,
        }
    }

    /// The read transforms.
    pub fn transforms(&self) -> &[Transform] {
        match self {
            FieldSpec::Pointer(_) => &[],
            FieldSpec::Full { transforms, .. } => transforms,
        }
    }

    /// Whether writes leave it out.
    pub fn read_only(&self) -> bool {
        matches!(
            self,
            FieldSpec::Full {
                read_only: true,
                ..
            }
        )
    }
}

fn active_value() -> Value {
    Value::from("active")
}

fn disabled_value() -> Value {
    Value::from("disabled")
}

/// The account status: where it is and which values mean active and disabled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSpec {
    /// The JSON pointer (`/active`, `/employment/status`).
    pub pointer: String,
    /// The value written for active accounts, and read as active (`"active"`).
    #[serde(default = "active_value")]
    pub active: Value,
    /// The value written for disabled accounts, and read as disabled (`"disabled"`).
    #[serde(default = "disabled_value")]
    pub disabled: Value,
    /// Further values read as disabled (`["terminated", "on_leave"]`).
    #[serde(default)]
    pub disabled_also: Vec<Value>,
    /// An absent value reads as active (otherwise it is an error).
    #[serde(default)]
    pub absent_is_active: bool,
}

/// A write endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteSpec {
    /// `POST` for creates, `PATCH` for updates, `DELETE` for deletes by default. An update
    /// by `PUT` reads the entity first and sends it whole.
    #[serde(default)]
    pub method: Option<String>,
    /// The path; `{anchor}` is replaced by the percent-escaped anchor.
    pub path: String,
    /// Creates: JSON pointer to the new entity's id in the answer. Set: the API assigns
    /// anchors (the proposed one is not sent). Unset: the anchor is sent at the anchor
    /// field's pointer and kept.
    #[serde(default)]
    pub id: Option<String>,
    /// JSON pointer under which the entity is sent (`/data`); empty: the body is the entity.
    #[serde(default)]
    pub envelope: String,
}

/// How pages follow each other, and how the end is found.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One answer holds everything.
    #[default]
    None,
    /// `?page=N&per_page=M`. Ends on a short or empty page, or when the total is reached.
    Page {
        /// The page parameter (`page`).
        #[serde(default = "page_param")]
        param: String,
        /// The page-size parameter (`per_page`).
        #[serde(default = "size_param")]
        size_param: String,
        /// The first page's number (1).
        #[serde(default = "one")]
        first: u64,
        /// JSON pointer to the total count in the body (`/meta/total`).
        #[serde(default)]
        total: Option<String>,
        /// Header holding the total count (`X-Total-Count`).
        #[serde(default)]
        total_header: Option<String>,
    },
    /// `?offset=N&limit=M`. Ends on a short or empty page, or when the total is reached.
    Offset {
        /// The offset parameter (`offset`).
        #[serde(default = "offset_param")]
        param: String,
        /// The limit parameter (`limit`).
        #[serde(default = "limit_param")]
        size_param: String,
        /// JSON pointer to the total count in the body (`/meta/total`).
        #[serde(default)]
        total: Option<String>,
        /// Header holding the total count (`X-Total-Count`).
        #[serde(default)]
        total_header: Option<String>,
    },
    /// A cursor in the body, sent back as a parameter. Ends when the cursor is absent,
    /// null or empty (or `has_more` is false).
    Cursor {
        /// The parameter the cursor is sent in (`cursor`).
        #[serde(default = "cursor_param")]
        param: String,
        /// The page-size parameter (`limit`).
        #[serde(default = "limit_param")]
        size_param: String,
        /// JSON pointer to the next cursor (`/next_cursor`).
        next: String,
        /// JSON pointer to a "more pages" flag.
        #[serde(default)]
        has_more: Option<String>,
    },
    /// The next page's URL in the body. Ends when it is absent, null or empty.
    NextUrl {
        /// JSON pointer to the URL (`/links/next`).
        next: String,
        /// The page-size parameter of the first request (`limit`).
        #[serde(default = "limit_param")]
        size_param: String,
    },
    /// The RFC 8288 `Link: <...>; rel="next"` header. Ends when there is none.
    LinkHeader {
        /// The page-size parameter of the first request (`per_page`).
        #[serde(default = "size_param")]
        size_param: String,
        /// Further parameters of the first request (`{ _page = "1" }`).
        #[serde(default)]
        first_query: BTreeMap<String, String>,
    },
}

fn page_param() -> String {
    "page".into()
}
fn size_param() -> String {
    "per_page".into()
}
fn offset_param() -> String {
    "offset".into()
}
fn limit_param() -> String {
    "limit".into()
}
fn cursor_param() -> String {
    "cursor".into()
}
fn one() -> u64 {
    1
}
fn overlap() -> u64 {
    300
}

/// Incremental reads: the listing with an "updated since" parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    /// The parameter (`updated_since`; json-server: `updated_at_gte`).
    pub param: String,
    /// JSON pointer to an item's change time (`/updated_at`): RFC 3339 text or Unix seconds.
    pub pointer: String,
    /// How the time is sent: `rfc3339` (default) or `unix`.
    #[serde(default)]
    pub format: TimeFormat,
    /// Seconds before the cursor that are read again, so clock skew loses nothing (300).
    #[serde(default = "overlap")]
    pub overlap_secs: u64,
}

/// How a time is sent in a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// `2026-12-01T10:00:00Z`.
    #[default]
    Rfc3339,
    /// Seconds since 1970.
    Unix,
}

impl RestConfig {
    /// Secret files resolved against `dir` (the config file's folder) when relative.
    pub fn relative_to(mut self, dir: &Path) -> Self {
        self.auth.relative_to(dir);
        self
    }

    /// Problems found without reading secrets or reaching the API.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = self.auth.secret_ref() {
            out.push(format!("auth: {}", e.message()));
        }
        if self.timeout_secs == 0 {
            out.push("timeout_secs must be at least 1".into());
        }
        for (what, e) in [
            ("orgs", self.orgs.as_ref()),
            ("accounts", Some(&self.accounts)),
        ] {
            if let Some(e) = e {
                e.problems(what, &mut out);
            }
        }
        if self.orgs.as_ref().is_some_and(|o| o.status.is_some()) {
            out.push("orgs: `status` is for accounts only".into());
        }
        out
    }

    /// [`problems`](Self::problems) as one `ConfigInvalid` error.
    pub fn check(&self) -> Result<()> {
        let p = self.problems();
        if p.is_empty() {
            Ok(())
        } else {
            Err(Error::config(format!("rest: {}", p.join("; "))))
        }
    }
}

fn pointer_ok(p: &str) -> bool {
    p.is_empty() || p.starts_with('/')
}

impl EntityConfig {
    fn problems(&self, what: &str, out: &mut Vec<String>) {
        if !self.path.starts_with('/') {
            out.push(format!("{what}.path {:?} must start with '/'", self.path));
        }
        if !self.fields.contains_key("anchor") {
            out.push(format!(
                "{what}.fields: `anchor` is required (the JSON pointer of the immutable id)"
            ));
        }
        if self.page_size == 0 {
            out.push(format!("{what}.page_size must be at least 1"));
        }
        let mut pointers: Vec<(String, &str)> = self
            .fields
            .iter()
            .map(|(k, f)| (format!("{what}.fields.{k}"), f.pointer()))
            .collect();
        pointers.push((format!("{what}.items"), &self.items));
        pointers.push((format!("{what}.item"), &self.item));
        if let Some(a) = &self.attrs {
            pointers.push((format!("{what}.attrs"), a));
        }
        if let Some(s) = &self.status {
            pointers.push((format!("{what}.status.pointer"), &s.pointer));
        }
        if let Some(i) = &self.incremental {
            pointers.push((format!("{what}.incremental.pointer"), &i.pointer));
        }
        match &self.pagination {
            Pagination::Page { total, .. } | Pagination::Offset { total, .. } => {
                if let Some(t) = total {
                    pointers.push((format!("{what}.pagination.total"), t));
                }
            }
            Pagination::Cursor { next, has_more, .. } => {
                pointers.push((format!("{what}.pagination.next"), next));
                if let Some(h) = has_more {
                    pointers.push((format!("{what}.pagination.has_more"), h));
                }
            }
            Pagination::NextUrl { next, .. } => {
                pointers.push((format!("{what}.pagination.next"), next));
            }
            Pagination::None | Pagination::LinkHeader { .. } => {}
        }
        for (name, w) in [
            ("create", &self.create),
            ("update", &self.update),
            ("delete", &self.delete),
        ] {
            if let Some(w) = w {
                if !w.path.starts_with('/') {
                    out.push(format!(
                        "{what}.{name}.path {:?} must start with '/'",
                        w.path
                    ));
                }
                if name != "create" && !w.path.contains("{anchor}") {
                    out.push(format!(
                        "{what}.{name}.path {:?} must hold {{anchor}}",
                        w.path
                    ));
                }
                if let Some(m) = &w.method
                    && idsync_http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).is_err()
                {
                    out.push(format!("{what}.{name}.method {m:?} is not an HTTP method"));
                }
                if let Some(id) = &w.id {
                    pointers.push((format!("{what}.{name}.id"), id));
                }
                pointers.push((format!("{what}.{name}.envelope"), &w.envelope));
            }
        }
        if let Some(p) = &self.item_path
            && (!p.starts_with('/') || !p.contains("{anchor}"))
        {
            out.push(format!(
                "{what}.item_path {p:?} must start with '/' and hold {{anchor}}"
            ));
        }
        for (name, p) in pointers {
            if !pointer_ok(p) {
                out.push(format!(
                    "{name}: {p:?} is not a JSON pointer (RFC 6901: empty, or starting with '/')"
                ));
            }
        }
        for k in self.fields.keys() {
            let typed = match what {
                "orgs" => idsync_core::model::ORG_FIELDS,
                _ => idsync_core::model::ACCOUNT_FIELDS,
            };
            // the status has a table of its own (its values are mapped)
            let known = k == "anchor" || (k != "status" && typed.contains(&k.as_str()));
            if !known && !k.starts_with("attrs.") {
                out.push(format!(
                    "{what}.fields: unknown model field {k:?}{}",
                    if k == "status" {
                        " (the status has its own `status` table)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
}
