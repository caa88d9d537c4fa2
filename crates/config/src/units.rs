//! Value types with their own textual syntax: durations (`250ms`, `10s`), sizes (`512`, `64KiB`),
//! CIDR blocks and socket addresses.
//!
//! Each parses from the string form users write, serializes back to the same canonical form (so
//! `/config` output round-trips) and describes itself in the JSON Schema.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const DURATION_UNITS_HELP: &str = "use ms, s, m, h or d, e.g. `250ms`, `10s`, `5m`";
const SIZE_UNITS_HELP: &str =
    "use a byte count or KiB, MiB, GiB (binary units), e.g. `512`, `64KiB`, `10MiB`";

/// A duration written as an integer followed by a unit: `250ms`, `10s`, `5m`, `1h`, `1d`.
///
/// A bare number is rejected on purpose: `timeout: 5` is ambiguous (seconds? milliseconds?).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// The underlying `std::time::Duration`.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (digits, unit) = split_number(s);
        if s.is_empty() {
            return Err(format!("empty duration: {DURATION_UNITS_HELP}"));
        }
        if digits.is_empty() {
            return Err(format!("invalid duration `{s}`: {DURATION_UNITS_HELP}"));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("duration `{s}` is too large"))?;
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "duration `{s}` needs a unit: {DURATION_UNITS_HELP}"
                ))
            }
            other => {
                return Err(format!(
                    "unknown duration unit `{other}` in `{s}`: {DURATION_UNITS_HELP}"
                ))
            }
        };
        let ms = n
            .checked_mul(millis_per_unit)
            .ok_or_else(|| format!("duration `{s}` is too large"))?;
        Ok(Self::from_millis(ms))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let s = ms / 1000;
        if s == 0 {
            write!(f, "0s")
        } else if s.is_multiple_of(86_400) {
            write!(f, "{}d", s / 86_400)
        } else if s.is_multiple_of(3_600) {
            write!(f, "{}h", s / 3_600)
        } else if s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `250ms`, `10s`, `5m`, `1h` or `1d`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "duration `{v}` needs a unit: {DURATION_UNITS_HELP}"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "invalid duration `{v}`: {DURATION_UNITS_HELP}"
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "invalid duration `{v}`: fractions are not supported; {DURATION_UNITS_HELP}"
                )))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(ms|s|m|h|d)$",
            "description": "A duration: an integer followed by ms, s, m, h or d (e.g. `250ms`, `10s`, `5m`).",
        })
    }
}

/// A size in bytes, written as a plain integer (`512`) or with a binary unit (`64KiB`, `10MiB`,
/// `1GiB`). Decimal units (`KB`, `MB`) are rejected rather than guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

impl Size {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;

    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (digits, unit) = split_number(s);
        if s.is_empty() {
            return Err(format!("empty size: {SIZE_UNITS_HELP}"));
        }
        if digits.is_empty() {
            return Err(format!("invalid size `{s}`: {SIZE_UNITS_HELP}"));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("size `{s}` is too large"))?;
        let mult = match unit {
            "" => 1,
            "KiB" => Self::KIB,
            "MiB" => Self::MIB,
            "GiB" => Self::GIB,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` in `{s}`: {SIZE_UNITS_HELP}"
                ))
            }
        };
        n.checked_mul(mult)
            .map(Size)
            .ok_or_else(|| format!("size `{s}` is too large"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n != 0 && n.is_multiple_of(Self::GIB) {
            write!(f, "{}GiB", n / Self::GIB)
        } else if n != 0 && n.is_multiple_of(Self::MIB) {
            write!(f, "{}MiB", n / Self::MIB)
        } else if n != 0 && n.is_multiple_of(Self::KIB) {
            write!(f, "{}KiB", n / Self::KIB)
        } else {
            write!(f, "{n}")
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as `512`, `64KiB` or `10MiB`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("invalid size `{v}`: must not be negative")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Size, E> {
                Err(E::custom(format!(
                    "invalid size `{v}`: fractions are not supported; {SIZE_UNITS_HELP}"
                )))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl JsonSchema for Size {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size in bytes: a plain integer or an integer followed by KiB, MiB or GiB (e.g. `512`, `64KiB`, `10MiB`).",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^[0-9]+(KiB|MiB|GiB)?$" }
            ]
        })
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`); a bare address is accepted as a single host
/// (`/32` for IPv4, `/128` for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr(pub IpNet);

impl Cidr {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Cidr(net));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Cidr(IpNet::from(ip)));
        }
        Err(format!(
            "invalid CIDR `{s}`: expected an IP network such as `10.0.0.0/8` or a single address"
        ))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Cidr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP network such as `10.0.0.0/8` or a single IP address")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Cidr, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl JsonSchema for Cidr {
    fn schema_name() -> Cow<'static, str> {
        "Cidr".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An IP network in CIDR notation (`10.0.0.0/8`, `fd00::/8`) or a single IP address.",
        })
    }
}

/// `deserialize_with` helper for `IP:PORT` socket addresses with a message that says what is
/// expected (host names are not resolved at config load).
pub(crate) fn deserialize_socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = SocketAddr;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an address such as `0.0.0.0:8080` or `[::1]:8080`")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketAddr, E> {
            parse_socket_addr(v).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(V)
}

pub(crate) fn parse_socket_addr(v: &str) -> Result<SocketAddr, String> {
    v.parse::<SocketAddr>().map_err(|_| {
        format!(
            "invalid address `{v}`: expected IP:PORT such as `0.0.0.0:8080` or `[::1]:8080` (host names are not allowed)"
        )
    })
}

/// Splits `"250ms"` into `("250", "ms")`: the leading ASCII digits and the rest.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(s.len(), |(i, _)| i);
    s.split_at(end)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(
            "250ms".parse::<Duration>().unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!("10s".parse::<Duration>().unwrap(), Duration::from_secs(10));
        assert_eq!("5m".parse::<Duration>().unwrap(), Duration::from_secs(300));
        assert_eq!("1h".parse::<Duration>().unwrap(), Duration::from_secs(3600));
        assert_eq!(
            "1d".parse::<Duration>().unwrap(),
            Duration::from_secs(86400)
        );
        assert_eq!("0s".parse::<Duration>().unwrap(), Duration::from_secs(0));
    }

    #[test]
    fn durations_reject_bad_input() {
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "10sec",
            "10 s",
            "-1s",
            "1m30s",
            "99999999999999999999s",
        ] {
            let err = bad.parse::<Duration>().unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!("10"
            .parse::<Duration>()
            .unwrap_err()
            .contains("needs a unit"));
        assert!("10sec"
            .parse::<Duration>()
            .unwrap_err()
            .contains("unknown duration unit `sec`"));
        assert!("18446744073709551615d"
            .parse::<Duration>()
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn durations_display_round_trip() {
        for s in ["250ms", "10s", "5m", "1h", "1d", "90s", "1500ms", "0s"] {
            assert_eq!(s.parse::<Duration>().unwrap().to_string(), s);
        }
        assert_eq!("60s".parse::<Duration>().unwrap().to_string(), "1m");
    }

    #[test]
    fn sizes_parse_and_display() {
        assert_eq!("512".parse::<Size>().unwrap(), Size(512));
        assert_eq!("64KiB".parse::<Size>().unwrap(), Size(64 * 1024));
        assert_eq!("10MiB".parse::<Size>().unwrap(), Size(10 * 1024 * 1024));
        assert_eq!("1GiB".parse::<Size>().unwrap(), Size(1 << 30));
        for s in ["512", "64KiB", "10MiB", "1GiB", "0", "1000"] {
            assert_eq!(s.parse::<Size>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn sizes_reject_bad_input() {
        for bad in [
            "",
            "KiB",
            "64KB",
            "10MB",
            "1G",
            "1.5MiB",
            "-1",
            "10 MiB",
            "99999999999GiB",
        ] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
        assert!("64KB"
            .parse::<Size>()
            .unwrap_err()
            .contains("unknown size unit `KB`"));
    }

    #[test]
    fn cidr_accepts_bare_ips() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "10.1.2.3".parse::<Cidr>().unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com".parse::<Cidr>().is_err());
    }
}
