//! The Gatehouse config file: model, loading, `${ENV}` interpolation, validation with YAML paths
//! and line numbers, JSON Schema and redaction.
//!
//! Loading runs in stages, each reporting errors as `path (line L, column C): message`:
//! 1. The YAML event stream is walked once to build a [`SourceMap`] (YAML path -> position) and
//!    to find scalars with `${...}` references. Syntax errors stop here, except one tolerance:
//!    unquoted `/users/{id}` or `${X}` inside `{ ... }` / `[ ... ]` (invalid YAML, but how
//!    SPEC.md writes its examples) is retried once with those values quoted (see `lenient`).
//! 2. References are expanded per scalar (all missing variables are reported together) and the
//!    affected scalars are re-emitted as quoted strings on the same lines.
//! 3. `serde-saphyr` deserializes the typed model; its first error (unknown field, wrong type,
//!    bad duration...) is mapped back to a YAML path through the source map.
//! 4. Semantic validation collects every remaining problem.

pub mod compile;
mod compile_auth;
mod env;
mod lenient;
mod model;
mod source_map;
mod units;
pub mod validate;
pub mod validate_auth;

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use serde_json::Value;
use serde_saphyr::MessageFormatter;

pub use compile::{compile, compile_str};
pub use env::interpolate;
pub use model::{
    Admin, Allow, ApiKeyAuth, AuthProvider, Backend, Balance, CertificateFiles, Concurrency,
    Config, Consumer, CorsConfig, ForwardAuth, HeaderOps, HeaderRules, IntrospectionAuth,
    JwksSettings, JwtAuth, JwtKeyConfig, Limits, Listener, ListenerTls, OnError, RateLimit, Redis,
    Rewrite, Route, RouteAuth, RouteMatch, Scope, Target, Upstream, UpstreamTimeouts,
};
use source_map::PosTarget;
pub use source_map::{push_index, push_key, Location, SourceMap};
pub use units::{Cidr, Duration, Size};
pub use validate::PathPattern;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// YAML path of the offending node, e.g. `routes[2].match.path`; empty for the whole file.
    pub path: String,
    /// Position of that node in the file, when known.
    pub location: Option<Location>,
    pub message: String,
}

impl ConfigError {
    /// An error at `path` whose location is filled in later from the source map.
    pub(crate) fn at(path: &str, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            location: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.location) {
            (false, Some(loc)) => write!(f, "{} ({loc}): {}", self.path, self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
            (true, Some(loc)) => write!(f, "({loc}): {}", self.message),
            (true, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// All problems found in a config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A successfully loaded config and where each of its nodes is in the file (for later
/// diagnostics, e.g. errors found while compiling the runtime snapshot).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub source_map: SourceMap,
}

/// Parses, interpolates and validates a config. `env` looks up `${NAME}` references.
pub fn load_str(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigErrors> {
    let (text, walk, column_fix) = match source_map::walk(text) {
        Ok(walk) => (Cow::Borrowed(text), walk, None),
        Err(e) => {
            let retry = lenient::quote_flow_braces(text)
                .and_then(|(quoted, fix)| source_map::walk(&quoted).ok().map(|w| (quoted, w, fix)));
            match retry {
                Some((quoted, mut walk, fix)) => {
                    walk.map.map_locations(|l| fix.fix(l));
                    (Cow::Owned(quoted), walk, Some(fix))
                }
                None => {
                    return Err(ConfigError {
                        path: String::new(),
                        location: Some(Location {
                            line: e.marker().line(),
                            column: e.marker().col() + 1,
                        }),
                        message: format!("invalid YAML: {}", e.kind()),
                    }
                    .into())
                }
            }
        }
    };
    let text: &str = &text;
    let source_map = walk.map;
    let locate = |mut errors: Vec<ConfigError>| -> ConfigErrors {
        for e in &mut errors {
            if e.location.is_none() {
                e.location = source_map.locate_nearest(&e.path);
            }
        }
        // Stable: errors on the same node keep the order the checks produced them in.
        errors.sort_by_key(|e| {
            e.location
                .map_or((usize::MAX, usize::MAX), |l| (l.line, l.column))
        });
        ConfigErrors(errors)
    };

    let rewritten = env::apply(text, &walk.scalars, env).map_err(&locate)?;
    let yaml = rewritten.as_deref().unwrap_or(text);

    let mut config: Config = match serde_saphyr::from_str(yaml) {
        Ok(config) => config,
        Err(e) => {
            // Positions from the rewritten text: lines are identical, columns after an
            // interpolated scalar may differ, so the path is found in a map of that text and the
            // location is then taken from the original.
            let rewritten_map;
            let map = match &rewritten {
                Some(r) => match source_map::walk(r) {
                    Ok(w) => {
                        rewritten_map = w.map;
                        &rewritten_map
                    }
                    Err(_) => &source_map,
                },
                None => &source_map,
            };
            let error = deserialize_error(&e, map, &source_map, column_fix.as_ref());
            return Err(locate(vec![error]));
        }
    };

    let errors = validate::validate(&config);
    if !errors.is_empty() {
        return Err(locate(errors));
    }
    normalize(&mut config);
    Ok(Loaded { config, source_map })
}

/// Reads and loads a config file, interpolating from the process environment.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: String::new(),
        location: None,
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    load_str(&text, &|name| std::env::var(name).ok())
}

/// The JSON Schema of the config file (`gatehouse schema`).
pub fn json_schema() -> Value {
    schemars::schema_for!(Config).to_value()
}

/// Converts the deserializer's error. `map` is the source map of the text that was deserialized
/// (to find the path from the reported position); locations come from `original`, the user's
/// text, and `fix` maps a reported position back to it when flow scalars were quoted.
fn deserialize_error(
    e: &serde_saphyr::Error,
    map: &SourceMap,
    original: &SourceMap,
    fix: Option<&lenient::ColumnFix>,
) -> ConfigError {
    let mut inner = e;
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = inner
    {
        inner = error;
    }
    let message: String = serde_saphyr::DefaultMessageFormatter
        .format_message(inner)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let reported = e.location().and_then(|l| {
        let line = usize::try_from(l.line()).ok()?;
        let column = usize::try_from(l.column()).ok()?;
        (line > 0).then_some(Location { line, column })
    });
    let duplicate = message.starts_with("duplicate");
    let target = if message.starts_with("unknown field") || duplicate {
        PosTarget::Key
    } else if message.starts_with("missing field") {
        PosTarget::Mapping
    } else {
        PosTarget::Node
    };
    let path = reported
        .and_then(|at| map.path_at(at, target))
        .unwrap_or_default();
    let fixed = reported.map(|l| fix.map_or(l, |f| f.fix(l)));
    let location = if path.is_empty() || duplicate {
        // A duplicate key shares its path with the first occurrence; the reported position is
        // the second one, which is the one to fix.
        fixed
    } else if target == PosTarget::Key {
        // Errors about a key (`unknown field`) point at the key, not at its value.
        original
            .locate_key(&path)
            .or_else(|| original.locate(&path))
            .or(fixed)
    } else {
        original.locate(&path).or(fixed)
    };
    ConfigError {
        path,
        location,
        message,
    }
}

/// Canonical forms the runtime can rely on: upper-case methods, lower-case header names, no
/// empty admin token.
fn normalize(config: &mut Config) {
    if config.admin.token.as_deref() == Some("") {
        config.admin.token = None;
    }
    for route in &mut config.routes {
        for m in &mut route.r#match.methods {
            *m = m.to_ascii_uppercase();
        }
        let m = &mut route.r#match;
        m.headers = std::mem::take(&mut m.headers)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        for ops in [&mut route.headers.request, &mut route.headers.response] {
            ops.set = std::mem::take(&mut ops.set)
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            for name in &mut ops.remove {
                *name = name.to_ascii_lowercase();
            }
        }
    }
}

pub const REDACTED: &str = "<redacted>";

/// Field names whose values are secrets wherever they appear.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    matches!(
        k.as_str(),
        "token" | "secret" | "password" | "passphrase" | "private_key" | "api_key" | "api_keys"
    ) || ["_token", "_secret", "_password", "_passphrase"]
        .iter()
        .any(|s| k.ends_with(s))
}

/// Header names whose configured values are credentials.
fn is_secret_header(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "x-api-key"
    )
}

impl Config {
    /// The config as JSON for the admin API, with secrets replaced by `"<redacted>"`: tokens,
    /// secrets, passwords, inline key material (PEM) and credential header values.
    pub fn redacted(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        redact(&mut value, false);
        if let Some(url) = value.pointer_mut("/redis/url") {
            if let Some(s) = url.as_str() {
                *url = Value::String(validate::redact_url_password(s));
            }
        }
        if let Some(Value::Array(nodes)) = value.pointer_mut("/redis/cluster") {
            for url in nodes {
                if let Some(s) = url.as_str() {
                    *url = Value::String(validate::redact_url_password(s));
                }
            }
        }
        value
    }
}

fn redact(value: &mut Value, header_map: bool) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "jwk" {
                    // Symmetric (`k`) and private members of an inline JWK.
                    if let Value::Object(jwk) = v {
                        for (m, mv) in jwk.iter_mut() {
                            if matches!(
                                m.as_str(),
                                "k" | "d" | "p" | "q" | "dp" | "dq" | "qi" | "oth"
                            ) {
                                *mv = Value::String(REDACTED.into());
                            }
                        }
                    }
                    continue;
                }
                if (is_secret_key(k) || (header_map && is_secret_header(k))) && !v.is_null() {
                    *v = Value::String(REDACTED.into());
                } else {
                    // Header maps: `match.headers` and `headers.{request,response}.set`.
                    let child_is_header_map = k == "set"
                        || (k == "headers"
                            && v.get("request").is_none()
                            && v.get("response").is_none());
                    redact(v, child_is_header_map);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, false)),
        Value::String(s) if s.contains("-----BEGIN") => *s = REDACTED.into(),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
