//! Kubernetes resource quantities (`500m`, `0.5`, `1`, `80Mi`, `1Gi`, `128M`, `1e3`).
//!
//! Every quantity is parsed exactly into nano-units (`u128`), so comparisons between
//! `1`, `1000m` and `1e3m` are exact and no floating point is involved. CPU is then
//! handled in millicores and memory in bytes, both rounded up like the apiserver does.

use std::fmt;

/// Why a quantity string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error("quantity {0:?} is negative")]
    Negative(String),
    #[error(
        "quantity {0:?} is not a Kubernetes quantity (expected e.g. 500m, 0.5, 80Mi, 1Gi, 1e3)"
    )]
    Syntax(String),
    #[error("quantity {0:?} is too large")]
    TooLarge(String),
}

const NANO: u128 = 1_000_000_000;
/// Values above 2^63 base units (cores or bytes) are never meaningful for a pod.
const MAX_UNITS: u128 = 1 << 63;

/// A parsed non-negative quantity, in nano-units (rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(u128);

impl Quantity {
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        parse_nanos(input).map(Quantity)
    }

    pub fn nanos(self) -> u128 {
        self.0
    }

    /// Value in millicores (CPU), rounded up.
    pub fn millis(self) -> u64 {
        // MAX_UNITS keeps this within u64.
        u64::try_from(self.0.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }

    /// Value in whole base units (bytes for memory), rounded up.
    pub fn units(self) -> u64 {
        u64::try_from(self.0.div_ceil(NANO)).unwrap_or(u64::MAX)
    }
}

fn parse_nanos(input: &str) -> Result<u128, QuantityError> {
    let s = input;
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let syntax = || QuantityError::Syntax(input.to_string());
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut negative = false;
    if let Some(&c) = bytes.first() {
        if c == b'+' || c == b'-' {
            negative = c == b'-';
            i = 1;
        }
    }
    let mut mantissa: u128 = 0;
    let mut frac_digits: i32 = 0;
    let mut digits = 0usize;
    let mut seen_dot = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_digit() {
            digits += 1;
            if digits > 36 {
                return Err(QuantityError::TooLarge(input.to_string()));
            }
            mantissa = mantissa * 10 + u128::from(c - b'0');
            if seen_dot {
                frac_digits += 1;
            }
        } else if c == b'.' && !seen_dot {
            seen_dot = true;
        } else {
            break;
        }
        i += 1;
    }
    if digits == 0 {
        return Err(syntax());
    }
    let suffix = &s[i..];
    // (power of ten, power of two)
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let rest = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or_else(syntax)?;
            let (sign, num) = match rest.as_bytes().first() {
                Some(b'-') => (-1, &rest[1..]),
                Some(b'+') => (1, &rest[1..]),
                _ => (1, rest),
            };
            if num.is_empty() || num.len() > 3 || !num.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            let n: i32 = num.parse().map_err(|_| syntax())?;
            (sign * n, 0)
        }
    };
    if negative && mantissa != 0 {
        return Err(QuantityError::Negative(input.to_string()));
    }
    let too_large = || QuantityError::TooLarge(input.to_string());
    // nanos = mantissa * 10^(9 + exp10 - frac_digits) * 2^exp2
    let mut value = mantissa
        .checked_mul(1u128.checked_shl(exp2).ok_or_else(too_large)?)
        .ok_or_else(too_large)?;
    let pow10 = 9 + exp10 - frac_digits;
    if pow10 >= 0 {
        if mantissa != 0 {
            let factor = 10u128.checked_pow(pow10 as u32).ok_or_else(too_large)?;
            value = value.checked_mul(factor).ok_or_else(too_large)?;
        }
    } else {
        match 10u128.checked_pow((-pow10) as u32) {
            Some(div) => value = value.div_ceil(div),
            // Smaller than any representable unit but non-zero: round up to one nano-unit.
            None => value = u128::from(value != 0),
        }
    }
    if value > MAX_UNITS * NANO {
        return Err(too_large());
    }
    Ok(value)
}

/// Format millicores the way people write them: `250m`, `1`, `2`.
pub fn format_cpu(millis: u64) -> String {
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

const KI: u64 = 1024;
pub const MI: u64 = 1024 * 1024;
pub const GI: u64 = 1024 * 1024 * 1024;

/// Format bytes with the largest binary suffix that divides them exactly.
pub fn format_memory(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_string();
    }
    for (unit, suffix) in [(GI, "Gi"), (MI, "Mi"), (KI, "Ki")] {
        if bytes % unit == 0 {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// CPU in millicores, rendered as a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cpu(pub u64);

/// Memory in bytes, rendered as a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Memory(pub u64);

impl Cpu {
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        Quantity::parse(s).map(|q| Cpu(q.millis()))
    }
}

impl Memory {
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        Quantity::parse(s).map(|q| Memory(q.units()))
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_cpu(self.0))
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_memory(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_forms() {
        assert_eq!(Cpu::parse("500m").unwrap(), Cpu(500));
        assert_eq!(Cpu::parse("0.5").unwrap(), Cpu(500));
        assert_eq!(Cpu::parse("1").unwrap(), Cpu(1000));
        assert_eq!(Cpu::parse("1e3").unwrap(), Cpu(1_000_000));
        assert_eq!(Cpu::parse("1e-3").unwrap(), Cpu(1));
        assert_eq!(Cpu::parse("250000u").unwrap(), Cpu(250));
        assert_eq!(Cpu::parse("+2").unwrap(), Cpu(2000));
        // the apiserver rounds sub-milli CPU up
        assert_eq!(Cpu::parse("0.0001").unwrap(), Cpu(1));
        assert_eq!(Cpu::parse("1.5k").unwrap(), Cpu(1_500_000));
    }

    #[test]
    fn memory_forms() {
        assert_eq!(Memory::parse("80Mi").unwrap(), Memory(80 * MI));
        assert_eq!(Memory::parse("1Gi").unwrap(), Memory(GI));
        assert_eq!(Memory::parse("128M").unwrap(), Memory(128_000_000));
        assert_eq!(Memory::parse("1e3").unwrap(), Memory(1000));
        assert_eq!(Memory::parse("1.5Gi").unwrap(), Memory(3 * GI / 2));
        assert_eq!(Memory::parse("0.5Ki").unwrap(), Memory(512));
        assert_eq!(
            Memory::parse("1E").unwrap(),
            Memory(1_000_000_000_000_000_000)
        );
        assert_eq!(Memory::parse("1.1").unwrap(), Memory(2));
    }

    #[test]
    fn rejects() {
        for bad in [
            "", "abc", "1x", "Mi", "1 Mi", "1..2", "1e", "1e+", "--1", "1Mii", "१",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Quantity::parse("-1"),
            Err(QuantityError::Negative("-1".into()))
        );
        assert!(matches!(
            Quantity::parse("1e30"),
            Err(QuantityError::TooLarge(_))
        ));
        assert!(matches!(
            Quantity::parse("99999999999999999999999999999999999999999"),
            Err(QuantityError::TooLarge(_))
        ));
        assert!(matches!(
            Quantity::parse("9Ei"),
            Err(QuantityError::TooLarge(_))
        ));
        assert_eq!(Quantity::parse("-0").unwrap().nanos(), 0);
    }

    #[test]
    fn ordering_is_exact() {
        let a = Quantity::parse("1").unwrap();
        let b = Quantity::parse("1000m").unwrap();
        let c = Quantity::parse("1001m").unwrap();
        assert_eq!(a, b);
        assert!(c > a);
        assert!(Quantity::parse("1Ki").unwrap() > Quantity::parse("1k").unwrap());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_cpu(285), "285m");
        assert_eq!(format_cpu(2000), "2");
        assert_eq!(format_memory(96 * MI), "96Mi");
        assert_eq!(format_memory(GI), "1Gi");
        assert_eq!(format_memory(1536), "1536");
        assert_eq!(format_memory(1000), "1000");
        assert_eq!(format_memory(2048), "2Ki");
    }
}
