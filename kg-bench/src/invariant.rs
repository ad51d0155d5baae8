//! Multi-key invariants: rules over a group of keys that every consistent view of the store
//! must keep, such as a bank's total (transfers move money, never make it) or a write that
//! sets several keys at once (a view holds all of it or none). A view is the keys' values at
//! one revision: the store's state after a run (`--state`), or a read of several keys at one
//! revision once the API has one.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::judge::StoreState;

/// The values of some keys at one revision; a key without a value is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The revision the view was read at, when known.
    pub revision: Option<i64>,
    pub values: BTreeMap<String, Option<String>>,
}

impl View {
    /// The view a state dump gives: every key in it, at no particular revision.
    pub fn from_state(state: &StoreState) -> Self {
        View {
            revision: None,
            values: state
                .iter()
                .map(|(key, stored)| (key.clone(), stored.value.clone()))
                .collect(),
        }
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.values.get(key).and_then(Option::as_deref)
    }
}

/// A rule over a group of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invariant {
    /// The keys' values, read as integers (an absent key as 0; a value may carry a `:` and a
    /// tag after its integer, which makes it unique), add up to `total`.
    Sum { keys: Vec<String>, total: i64 },
    /// The keys hold one value, or are all absent: they are only ever written together.
    Together { keys: Vec<String> },
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invariant::Sum { keys, total } => write!(f, "sum:{}={total}", keys.join(",")),
            Invariant::Together { keys } => write!(f, "together:{}", keys.join(",")),
        }
    }
}

impl FromStr for Invariant {
    type Err = String;

    /// `sum:K1,K2,...=TOTAL` or `together:K1,K2,...`.
    fn from_str(text: &str) -> Result<Self, String> {
        let usage = || {
            format!("invalid invariant {text:?}: expected sum:KEY,KEY,...=TOTAL or together:KEY,KEY,...")
        };
        let keys = |list: &str| -> Result<Vec<String>, String> {
            let keys: Vec<String> = list.split(',').map(str::to_owned).collect();
            if keys.len() < 2 || keys.iter().any(String::is_empty) {
                return Err(usage());
            }
            Ok(keys)
        };
        match text.split_once(':') {
            Some(("sum", rest)) => {
                let (list, total) = rest.split_once('=').ok_or_else(usage)?;
                Ok(Invariant::Sum {
                    keys: keys(list)?,
                    total: total.parse().map_err(|_| usage())?,
                })
            }
            Some(("together", list)) => Ok(Invariant::Together { keys: keys(list)? }),
            _ => Err(usage()),
        }
    }
}

/// A view that broke an invariant, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    pub invariant: String,
    pub revision: Option<i64>,
    pub detail: String,
}

/// Every view in `views` that breaks `invariant`.
pub fn check(views: &[View], invariant: &Invariant) -> Vec<Broken> {
    views
        .iter()
        .filter_map(|view| {
            broken_in(view, invariant).map(|detail| Broken {
                invariant: invariant.to_string(),
                revision: view.revision,
                detail,
            })
        })
        .collect()
}

fn broken_in(view: &View, invariant: &Invariant) -> Option<String> {
    match invariant {
        Invariant::Sum { keys, total } => {
            let mut sum: i64 = 0;
            for key in keys {
                let value = view.value(key);
                let Some(amount) = crate::workload::balance(value) else {
                    return Some(format!("{key} holds {value:?}, not an integer"));
                };
                sum = sum.saturating_add(amount);
            }
            (sum != *total).then(|| format!("the keys add up to {sum}, not {total}"))
        }
        Invariant::Together { keys } => {
            // A rule built by hand may name no key: nothing to keep together.
            let head = keys.first()?;
            let first = view.value(head);
            keys.iter().find(|key| view.value(key) != first).map(|key| {
                format!(
                    "{head} holds {first:?} but {key} holds {:?}: a write seen in part",
                    view.value(key)
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(revision: i64, values: &[(&str, Option<&str>)]) -> View {
        View {
            revision: Some(revision),
            values: values
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                .collect(),
        }
    }

    #[test]
    fn invariants_parse_and_print_back() {
        for text in ["sum:a,b,c=100", "together:x,y"] {
            assert_eq!(text.parse::<Invariant>().unwrap().to_string(), text);
        }
        for bad in [
            "sum:a=1",
            "sum:a,b",
            "sum:a,b=x",
            "together:",
            "even:a,b",
            "a,b",
        ] {
            assert!(bad.parse::<Invariant>().is_err(), "{bad}");
        }
    }

    /// Transfers between three accounts keep 100 in all; one view catches a transfer half
    /// applied (the debit without the credit).
    #[test]
    fn a_sum_catches_a_transfer_seen_in_half() {
        let bank: Invariant = "sum:a,b,c=100".parse().unwrap();
        let views = [
            view(1, &[("a", Some("100"))]),
            view(2, &[("a", Some("70")), ("b", Some("30"))]),
            view(
                3,
                &[("a", Some("70")), ("b", Some("10")), ("c", Some("20"))],
            ),
            view(4, &[("a", Some("70")), ("b", Some("10"))]),
        ];
        let broken = check(&views, &bank);
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert_eq!(broken[0].revision, Some(4));
        assert_eq!(broken[0].detail, "the keys add up to 80, not 100");
        let garbage = view(5, &[("a", Some("lots"))]);
        assert!(check(&[garbage], &bank)[0]
            .detail
            .contains("not an integer"));
    }

    /// Keys written together by one transaction: a view with one key new and one old is torn.
    #[test]
    fn together_catches_a_write_seen_in_part() {
        let none = Invariant::Together { keys: Vec::new() };
        assert!(check(&[view(1, &[("x", Some("a"))])], &none).is_empty());
        let pair: Invariant = "together:x,y".parse().unwrap();
        let views = [
            view(1, &[]),
            view(2, &[("x", Some("t1")), ("y", Some("t1"))]),
            view(3, &[("x", Some("t2")), ("y", Some("t1"))]),
        ];
        let broken = check(&views, &pair);
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert_eq!(broken[0].revision, Some(3));
        assert!(broken[0].detail.contains("a write seen in part"));
    }

    #[test]
    fn a_state_dump_is_a_view() {
        let state = StoreState::from([(
            "a".to_owned(),
            crate::judge::StoredKey {
                value: Some("100".to_owned()),
                revision: 3,
            },
        )]);
        let bank: Invariant = "sum:a,b=100".parse().unwrap();
        assert!(check(&[View::from_state(&state)], &bank).is_empty());
    }
}
