//! The authorize phase: consumer groups, token scopes and claims (`allow`). A failure is 403:
//! the caller is known but not allowed.

use gatehouse_core::auth::AllowRules;
use gatehouse_core::{GatewayError, Snapshot};

use super::auth::Identity;
use super::jwt;

pub fn check(
    allow: &AllowRules,
    id: Option<&Identity>,
    snap: &Snapshot,
) -> Result<(), GatewayError> {
    if !allow.needs_identity() {
        return Ok(());
    }
    let id = id.ok_or(GatewayError::Forbidden)?;
    if !allow.groups.is_empty() {
        let groups = id
            .consumer
            .map(|c| snap.auth.consumers[c].groups.as_slice())
            .unwrap_or(&[]);
        if !allow.groups.iter().any(|g| groups.contains(g)) {
            return Err(GatewayError::Forbidden);
        }
    }
    let empty = serde_json::Map::new();
    let claims = id.claims.as_deref().unwrap_or(&empty);
    if !allow.scopes.is_empty() {
        let have = jwt::scopes(claims);
        if !allow.scopes.iter().all(|s| have.contains(s)) {
            return Err(GatewayError::Forbidden);
        }
    }
    for (name, want) in &allow.claims {
        let ok = match claims.get(name) {
            Some(serde_json::Value::String(s)) => s == want,
            Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(want)),
            Some(serde_json::Value::Number(n)) => n.to_string() == *want,
            Some(serde_json::Value::Bool(b)) => b.to_string() == *want,
            _ => false,
        };
        if !ok {
            return Err(GatewayError::Forbidden);
        }
    }
    Ok(())
}
