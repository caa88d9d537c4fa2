//! IP allow/deny: runs before authentication, on the trusted client IP (X3: the TCP peer,
//! or the right-most untrusted `X-Forwarded-For` entry from a trusted proxy).

use std::net::IpAddr;

use gatehouse_core::auth::AllowRules;
use gatehouse_core::GatewayError;

pub fn check(allow: &AllowRules, client_ip: IpAddr) -> Result<(), GatewayError> {
    if allow.deny_ips.iter().any(|n| n.contains(&client_ip)) {
        return Err(GatewayError::Forbidden);
    }
    if !allow.ips.is_empty() && !allow.ips.iter().any(|n| n.contains(&client_ip)) {
        return Err(GatewayError::Forbidden);
    }
    Ok(())
}
