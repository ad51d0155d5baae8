//! What the load is made of: the operation mix, the key distribution and the value sizes,
//! parsed from the command line and sampled by each worker with its own RNG.

use std::fmt;
use std::str::FromStr;

use rand::rngs::SmallRng;
use rand::Rng;
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Get,
    Put,
    Delete,
    /// Compare-and-swap: a GET, then a PUT of a new value conditioned on the revision read
    /// (`If-Match`, or `If-None-Match: *` for a missing key).
    Cas,
    /// `DELETE /api/keys?prefix=P`, P being the sampled key without its last digit: the ten
    /// keys that share it, deleted at one revision.
    #[serde(rename = "delete_prefix")]
    DeletePrefix,
    /// A transfer between two of [`ACCOUNTS`] accounts: one `POST /api/txn` reads them all
    /// at one revision, a second moves 1 from one to another if neither changed since. The
    /// history records the read as a get of each account and the transfer as a CAS of each of
    /// its two.
    Txn,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::Get,
        Op::Put,
        Op::Delete,
        Op::Cas,
        Op::DeletePrefix,
        Op::Txn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::Cas => "cas",
            Op::DeletePrefix => "delete_prefix",
            Op::Txn => "txn",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `get=90,put=9,delete=1`: relative weights of each operation (`cas` and `delete_prefix`
/// too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mix {
    pub get: u32,
    pub put: u32,
    pub delete: u32,
    pub cas: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub delete_prefix: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub txn: u32,
}

fn is_zero(weight: &u32) -> bool {
    *weight == 0
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut mix = Mix {
            get: 0,
            put: 0,
            delete: 0,
            cas: 0,
            delete_prefix: 0,
            txn: 0,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not OP=WEIGHT"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("{weight:?} is not a whole number"))?;
            let slot = match name.trim() {
                "get" => &mut mix.get,
                "put" => &mut mix.put,
                "delete" => &mut mix.delete,
                "cas" => &mut mix.cas,
                "delete_prefix" => &mut mix.delete_prefix,
                "txn" => &mut mix.txn,
                other => {
                    return Err(format!(
                        "unknown operation {other:?} (get, put, delete, cas, delete_prefix, txn)"
                    ))
                }
            };
            *slot = weight;
        }
        if mix.total() == 0 {
            return Err("the mix needs at least one weight above 0".to_owned());
        }
        Ok(mix)
    }
}

impl Mix {
    fn total(&self) -> u32 {
        self.get + self.put + self.delete + self.cas + self.delete_prefix + self.txn
    }

    pub fn pick(&self, rng: &mut SmallRng) -> Op {
        let roll = rng.random_range(0..self.total());
        if roll < self.get {
            Op::Get
        } else if roll < self.get + self.put {
            Op::Put
        } else if roll < self.get + self.put + self.delete {
            Op::Delete
        } else if roll < self.get + self.put + self.delete + self.cas {
            Op::Cas
        } else if roll < self.total() - self.txn {
            Op::DeletePrefix
        } else {
            Op::Txn
        }
    }
}

/// How keys are chosen among `--keys`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum KeyDist {
    Uniform,
    /// Zipf with exponent `s`: key 0 is the hottest.
    Zipf {
        s: f64,
    },
}

impl FromStr for KeyDist {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            None if text == "uniform" => Ok(KeyDist::Uniform),
            None if text == "zipf" => Ok(KeyDist::Zipf { s: 1.1 }),
            Some(("zipf", s)) => match s.parse::<f64>() {
                Ok(s) if s > 0.0 && s.is_finite() => Ok(KeyDist::Zipf { s }),
                _ => Err(format!("zipf exponent {s:?} must be a number above 0")),
            },
            _ => Err(format!("{text:?} is not uniform or zipf:S")),
        }
    }
}

/// `128` or `64..4096`: value sizes in bytes, uniform over the range (end inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ValueSize {
    pub min: usize,
    pub max: usize,
}

impl FromStr for ValueSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parse = |part: &str| {
            part.trim()
                .parse::<usize>()
                .map_err(|_| format!("{part:?} is not a size in bytes"))
        };
        let (min, max) = match text.split_once("..") {
            Some((min, max)) => (parse(min)?, parse(max)?),
            None => {
                let size = parse(text)?;
                (size, size)
            }
        };
        if min > max {
            return Err(format!("{min} is above {max}"));
        }
        if min < 32 {
            return Err("values are at least 32 bytes, to hold their unique prefix".to_owned());
        }
        Ok(ValueSize { min, max })
    }
}

/// Samples keys and values for one worker.
#[derive(Debug)]
pub struct Sampler {
    keys: u64,
    zipf: Option<Zipf<f64>>,
    sizes: ValueSize,
    run_id: u32,
}

impl Sampler {
    /// `run_id` goes into every value (see `value`); `new_run_id` makes one per run.
    pub fn new(keys: u64, dist: KeyDist, sizes: ValueSize, run_id: u32) -> Result<Self, String> {
        let zipf = match dist {
            KeyDist::Uniform => None,
            KeyDist::Zipf { s } => Some(
                #[allow(clippy::cast_precision_loss)] // key counts are far below 2^52
                Zipf::new(keys as f64, s).map_err(|err| format!("zipf: {err}"))?,
            ),
        };
        Ok(Self {
            keys,
            zipf,
            sizes,
            run_id,
        })
    }

    /// The index of the next key, in `0..keys`.
    pub fn key_index(&self, rng: &mut SmallRng) -> u64 {
        match &self.zipf {
            None => rng.random_range(0..self.keys),
            // Zipf samples 1..=n as a float.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(zipf) => (zipf.sample(rng) as u64).clamp(1, self.keys) - 1,
        }
    }

    /// A value unique to (this run, `client`, `sequence`), padded to a size in the configured
    /// range. The run's random id keeps values unique across runs too: a history check must
    /// never mistake a value an earlier run left behind for one this run has yet to write.
    pub fn value(&self, rng: &mut SmallRng, client: usize, sequence: u64) -> String {
        let size = rng.random_range(self.sizes.min..=self.sizes.max);
        let mut value = format!("r{:08x}-c{client}-s{sequence}-", self.run_id);
        let pad = size.saturating_sub(value.len());
        value.extend(std::iter::repeat_n('x', pad));
        value
    }
}

/// A random id for one run, in every value it writes. A process may make several runs (the
/// chaos drills run one per fault), so the id is per run, not per process.
pub fn new_run_id() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // Each RandomState has fresh keys: no RNG feature needed for one number.
    #[allow(clippy::cast_possible_truncation)]
    let id = std::hash::RandomState::new().build_hasher().finish() as u32;
    id
}

/// The key name of index `i`: fixed width, so keys sort in index order.
pub fn key_name(prefix: &str, i: u64) -> String {
    format!("{prefix}{i:08}")
}

/// How many accounts the `txn` operation moves money between: few, so that transfers
/// contend, and so that one transaction reads them all.
pub const ACCOUNTS: usize = 8;

/// An account of the `txn` operation: `{prefix}acct/N`, which no other operation's key (the
/// prefix and digits) starts with.
pub fn account_key(prefix: &str, i: usize) -> String {
    format!("{prefix}acct/{i}")
}

/// An account's balance: the integer a `txn` value starts with (its tail makes it unique),
/// and 0 for a missing account.
pub fn balance(value: Option<&str>) -> Option<i64> {
    match value {
        None => Some(0),
        Some(value) => value.split(':').next()?.parse().ok(),
    }
}

/// The key prefix of a run that names none.
pub const DEFAULT_KEY_PREFIX: &str = "bench/";

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn mixes_parse_and_reject_nonsense() {
        assert_eq!(
            "get=90,put=9,delete=1".parse::<Mix>(),
            Ok(Mix {
                get: 90,
                put: 9,
                delete: 1,
                cas: 0,
                delete_prefix: 0,
                txn: 0,
            })
        );
        assert_eq!("cas=2".parse::<Mix>().map(|m| m.cas), Ok(2));
        assert_eq!("txn=4".parse::<Mix>().map(|m| m.txn), Ok(4));
        assert_eq!(balance(Some("-12:0a.3.7")), Some(-12));
        assert_eq!(balance(None), Some(0));
        assert_eq!(balance(Some("x")), None);
        assert_eq!(
            "delete_prefix=3".parse::<Mix>().map(|m| m.delete_prefix),
            Ok(3)
        );
        assert_eq!(" put=1 ".parse::<Mix>().map(|m| (m.get, m.put)), Ok((0, 1)));
        for bad in ["", "get=0", "get", "get=x", "scan=1", "get=-1"] {
            assert!(bad.parse::<Mix>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_mix_is_sampled_in_proportion() {
        let mix: Mix = "get=79,put=9,delete=1,cas=10,delete_prefix=1"
            .parse()
            .unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..100_000 {
            *counts.entry(mix.pick(&mut rng)).or_insert(0) += 1;
        }
        assert!((78_000..80_000).contains(&counts[&Op::Get]), "{counts:?}");
        assert!(
            (800..1_200).contains(&counts[&Op::DeletePrefix]),
            "{counts:?}"
        );
        assert!((9_500..10_500).contains(&counts[&Op::Cas]), "{counts:?}");
        assert!((8_500..9_500).contains(&counts[&Op::Put]), "{counts:?}");
        assert!((800..1_200).contains(&counts[&Op::Delete]), "{counts:?}");
    }

    #[test]
    fn distributions_and_sizes_parse() {
        assert_eq!("uniform".parse::<KeyDist>(), Ok(KeyDist::Uniform));
        assert_eq!("zipf:1.1".parse::<KeyDist>(), Ok(KeyDist::Zipf { s: 1.1 }));
        assert!("zipf:0".parse::<KeyDist>().is_err());
        assert!("normal".parse::<KeyDist>().is_err());
        assert_eq!(
            "64..4096".parse::<ValueSize>(),
            Ok(ValueSize { min: 64, max: 4096 })
        );
        assert_eq!(
            "128".parse::<ValueSize>(),
            Ok(ValueSize { min: 128, max: 128 })
        );
        assert!("4096..64".parse::<ValueSize>().is_err());
        assert!("8".parse::<ValueSize>().is_err());
    }

    #[test]
    fn zipf_favours_the_first_keys_and_stays_in_range() {
        let sampler = Sampler::new(
            1000,
            KeyDist::Zipf { s: 1.1 },
            ValueSize { min: 64, max: 64 },
            1,
        )
        .unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let samples: Vec<u64> = (0..20_000).map(|_| sampler.key_index(&mut rng)).collect();
        assert!(samples.iter().all(|&i| i < 1000));
        let hot = samples.iter().filter(|&&i| i < 10).count();
        assert!(
            hot > samples.len() / 3,
            "the top 1% of keys draw {hot} of 20000"
        );
    }

    #[test]
    fn values_are_unique_and_sized() {
        let sampler =
            Sampler::new(10, KeyDist::Uniform, ValueSize { min: 64, max: 100 }, 0xabc).unwrap();
        let mut rng = SmallRng::seed_from_u64(3);
        let a = sampler.value(&mut rng, 1, 1);
        let b = sampler.value(&mut rng, 1, 2);
        assert_ne!(a, b);
        assert!((64..=100).contains(&a.len()));
        assert!(a.starts_with("r00000abc-c1-s1-"), "{a}");
        assert_ne!(new_run_id(), new_run_id());
    }
}
