//! The hardware address type every part shares.
//!
//! Owns parsing and printing of MAC addresses in the forms nodes, iPXE and operators
//! use (`52:54:00:12:34:56`, `52-54-00-12-34-56`, `525400123456`). Does no I/O.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet hardware address. Always printed lowercase and colon-separated.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

/// A string that is not a MAC address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a MAC address (expected six hex pairs like 52:54:00:12:34:56)")]
pub struct MacParseError(pub String);

impl MacAddr {
    /// Takes the first six bytes of a DHCP `chaddr`; `None` if it is shorter.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let six: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(MacAddr(six))
    }

    /// The form iPXE's `${mac:hexhyp}` and pxelinux use: `52-54-00-12-34-56`.
    pub fn hyphenated(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let hex: String = s.chars().filter(|c| *c != ':' && *c != '-').collect();
        let separators = s.len() - hex.len();
        if hex.len() != 12 || !(separators == 0 || separators == 5) {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = hex.get(i * 2..i * 2 + 2).ok_or_else(err)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| err())?;
        }
        Ok(MacAddr(out))
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

    #[test]
    fn parses_every_form_and_prints_one() {
        for s in ["52:54:00:AB:cd:0f", "52-54-00-ab-cd-0f", "525400abcd0f"] {
            let mac: MacAddr = s.parse().unwrap();
            assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
            assert_eq!(mac.hyphenated(), "52-54-00-ab-cd-0f");
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0g",
            "5254:00ab:cd0f",
            "52:54:00:ab:cd:0f:11",
            "../x",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s} accepted");
        }
    }
}
