//! MAC addresses as a type that cannot be malformed.
//!
//! Accepts `:` or `-` separated hex pairs in any case (iPXE's `${mac:hexhyp}`
//! arrives as `52-54-00-12-34-56`) and always displays the canonical form:
//! lower-case, `:` separated. Never panics on input.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet address, canonical when displayed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid MAC address {0:?}: expected six hex pairs separated by ':' or '-'")]
pub struct MacParseError(pub String);

impl MacAddr {
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The form iPXE's `${mac:hexhyp}` produces and dnsmasq file names use.
    pub fn hyphenated(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.chars().take(64).collect());
        if s.len() != 17 {
            return Err(err());
        }
        let sep = s.as_bytes()[2];
        if sep != b':' && sep != b'-' {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (i, part) in s.split(sep as char).enumerate() {
            if i >= 6 || part.len() != 2 {
                return Err(err());
            }
            out[i] = u8::from_str_radix(part, 16).map_err(|_| err())?;
            if !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<&str>) {
        let got = input.parse::<MacAddr>().ok().map(|m| m.to_string());
        assert_eq!(got.as_deref(), expected, "input {input:?}");
    }

    #[test]
    fn parses_and_canonicalizes() {
        check("58:47:ca:71:02:1e", Some("58:47:ca:71:02:1e"));
        check("58-47-CA-71-02-1E", Some("58:47:ca:71:02:1e"));
        check("58:47-ca:71:02:1e", None);
        check("58:47:ca:71:02", None);
        check("58:47:ca:71:02:1e:00", None);
        check("58:47:ca:71:02:1g", None);
        check("+8:47:ca:71:02:1e", None);
        check("", None);
        check("5847ca71021e", None);
        check("é8:47:ca:71:02:1", None);
    }

    #[test]
    fn hyphenated_roundtrip() {
        let m: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(m.hyphenated(), "52-54-00-12-34-56");
        assert_eq!(m.hyphenated().parse::<MacAddr>().unwrap(), m);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = s.parse::<MacAddr>();
        }
    }
}
