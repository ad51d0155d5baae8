//! What a multi-key transaction (`POST /api/txn`) is to the store: the request, validated by
//! the HTTP layer, and what running it did. The SQL that runs it is in `sql.rs`.

use std::collections::HashSet;

use kg_api::{Compare, CompareTarget, CompareValue, TxnOp, TxnRequest, TxnResponse};

use super::Change;

/// One transaction as the writer hands it to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnPlan {
    pub request: TxnRequest,
    /// The client's Idempotency-Key, if it sent one.
    pub idempotency_key: Option<String>,
}

impl TxnPlan {
    /// SHA-256 over the request, so that an idempotency key reused for another request (a
    /// single-key write included, whose fingerprint never starts this way) is refused.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"txn\0");
        // Serialising a parsed request is canonical: fields in declaration order, ops in order.
        hasher.update(serde_json::to_vec(&self.request).unwrap_or_default());
        hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// What running one transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// The compares were evaluated and one branch applied. `changes` are its writes, in key
    /// order at one revision (none for a replay, or a branch that changed nothing).
    Done {
        response: TxnResponse,
        changes: Vec<Change>,
        replayed: bool,
    },
    /// A put named a lease that does not exist or has expired: nothing written.
    LeaseNotFound(i64),
    /// The branch's prefix deletes would remove more than `MAX_PREFIX_DELETE` keys: nothing
    /// written.
    TooMany(u64),
    /// The branch's gets would carry more than `MAX_PAGE_BYTES` of values (this many bytes):
    /// nothing written, so that no answer holds more than a page's worth, whatever the values.
    TooLarge(u64),
    /// The idempotency key was already used for a different request.
    IdempotencyMismatch,
}

impl TxnOutcome {
    /// The answer to a plan whose idempotency key was used before, by a request with
    /// `recorded` as its fingerprint and `response` as its answer: that answer again for the
    /// same request, a mismatch for another.
    pub fn replay(recorded: &str, fingerprint: &str, response: Option<&[u8]>) -> Self {
        match response
            .filter(|_| recorded == fingerprint)
            .and_then(|body| serde_json::from_slice(body).ok())
        {
            Some(response) => TxnOutcome::Done {
                response,
                changes: Vec::new(),
                replayed: true,
            },
            None => TxnOutcome::IdempotencyMismatch,
        }
    }
}

/// A live key's state as a compare sees it: value, mod_revision, create_revision, version.
pub struct Current<'a> {
    pub value: &'a [u8],
    pub revision: i64,
    pub create_revision: i64,
    pub version: i64,
}

impl<'a> From<&'a super::KeyRow> for Current<'a> {
    fn from(row: &'a super::KeyRow) -> Self {
        Current {
            value: row.value.as_deref().unwrap_or_default(),
            revision: row.mod_revision,
            create_revision: row.create_revision,
            version: row.version,
        }
    }
}

/// Whether `compare` holds for a key in `current` state (`None`: missing). As in etcd, a
/// missing key's revisions and version are 0 and every comparison of its value fails. A
/// target and operand that do not go together never hold; the HTTP layer refuses them first.
pub fn holds(compare: &Compare, current: Option<&Current<'_>>) -> bool {
    let number = |field: fn(&Current<'_>) -> i64| current.map_or(0, field);
    match (compare.target, &compare.value) {
        (CompareTarget::Value, CompareValue::Text(text)) => {
            current.is_some_and(|key| compare.op.holds(key.value.cmp(text.as_bytes())))
        }
        (CompareTarget::Revision, CompareValue::Integer(want)) => {
            compare.op.holds(number(|key| key.revision).cmp(want))
        }
        (CompareTarget::CreateRevision, CompareValue::Integer(want)) => compare
            .op
            .holds(number(|key| key.create_revision).cmp(want)),
        (CompareTarget::Version, CompareValue::Integer(want)) => {
            compare.op.holds(number(|key| key.version).cmp(want))
        }
        (CompareTarget::Exists, CompareValue::Bool(want)) => {
            compare.op.holds(current.is_some().cmp(want))
        }
        _ => false,
    }
}

/// How many of `plans`, from the first, can run as one batch: read together before any of
/// them writes, then written together, with the outcome of running them one after the other.
///
/// That holds while no plan touches (compares, reads or writes) a key that an earlier plan of
/// the run may write, no two share an idempotency key, and no plan's branch names a key twice
/// (a read after the branch's own write would miss it). A prefix delete reads a range, which
/// no set of keys describes, so it ends the run too, and so does a get (see the arm below).
pub fn batchable(plans: &[TxnPlan]) -> usize {
    let mut written: HashSet<&str> = HashSet::new();
    let mut idempotency_keys: HashSet<&str> = HashSet::new();
    for (index, plan) in plans.iter().enumerate() {
        let request = &plan.request;
        let mut touched: Vec<&str> = request.compare.iter().map(|c| c.key.as_str()).collect();
        let mut writes = Vec::new();
        for branch in [&request.success, &request.failure] {
            let mut named = HashSet::new();
            for op in branch {
                let key = match op {
                    // A prefix delete reads a range; a get's value is sized before the branch
                    // runs, one key at a time (`sql.rs`), so the batch never reads values
                    // that an answer could not carry.
                    TxnOp::DeletePrefix { .. } | TxnOp::Get { .. } => return index,
                    TxnOp::Put { key, .. } | TxnOp::Delete { key } => {
                        writes.push(key.as_str());
                        key
                    }
                };
                if !named.insert(key.as_str()) {
                    return index;
                }
                touched.push(key);
            }
        }
        let reused = plan
            .idempotency_key
            .as_deref()
            .is_some_and(|id| !idempotency_keys.insert(id));
        if reused || touched.iter().any(|key| written.contains(key)) {
            return index;
        }
        written.extend(writes);
    }
    plans.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kg_api::CompareOp;

    fn compare(target: CompareTarget, op: CompareOp, value: CompareValue) -> Compare {
        Compare {
            key: "k".to_owned(),
            target,
            op,
            value,
        }
    }

    #[test]
    fn a_missing_key_is_at_zero_and_fails_every_value_compare() {
        use CompareOp::*;
        let zero = CompareValue::Integer(0);
        for target in [
            CompareTarget::Revision,
            CompareTarget::CreateRevision,
            CompareTarget::Version,
        ] {
            assert!(holds(&compare(target, Equal, zero.clone()), None));
            assert!(!holds(&compare(target, Greater, zero.clone()), None));
        }
        for op in [Equal, NotEqual, Less, Greater] {
            let text = CompareValue::Text(String::new());
            assert!(!holds(&compare(CompareTarget::Value, op, text), None));
        }
        let absent = compare(CompareTarget::Exists, Equal, CompareValue::Bool(false));
        assert!(holds(&absent, None));
    }

    #[test]
    fn a_live_key_compares_bytes_and_numbers() {
        use CompareOp::*;
        let key = Current {
            value: b"b",
            revision: 7,
            create_revision: 3,
            version: 2,
        };
        let text = |s: &str| CompareValue::Text(s.to_owned());
        assert!(holds(
            &compare(CompareTarget::Value, Equal, text("b")),
            Some(&key)
        ));
        assert!(holds(
            &compare(CompareTarget::Value, Greater, text("a")),
            Some(&key)
        ));
        assert!(holds(
            &compare(CompareTarget::Value, Less, text("ba")),
            Some(&key)
        ));
        assert!(!holds(
            &compare(CompareTarget::Value, NotEqual, text("b")),
            Some(&key)
        ));
        let int = CompareValue::Integer;
        assert!(holds(
            &compare(CompareTarget::Revision, Equal, int(7)),
            Some(&key)
        ));
        assert!(holds(
            &compare(CompareTarget::CreateRevision, Less, int(4)),
            Some(&key)
        ));
        assert!(holds(
            &compare(CompareTarget::Version, NotEqual, int(1)),
            Some(&key)
        ));
        let exists = compare(CompareTarget::Exists, Equal, CompareValue::Bool(true));
        assert!(holds(&exists, Some(&key)));
        // A mismatched operand never holds.
        assert!(!holds(
            &compare(CompareTarget::Version, Equal, text("2")),
            Some(&key)
        ));
    }

    fn plan(compare: &[&str], success: Vec<TxnOp>, idempotency_key: Option<&str>) -> TxnPlan {
        TxnPlan {
            request: TxnRequest {
                compare: compare
                    .iter()
                    .map(|key| Compare {
                        key: (*key).to_owned(),
                        target: CompareTarget::Version,
                        op: CompareOp::Equal,
                        value: CompareValue::Integer(0),
                    })
                    .collect(),
                success,
                failure: Vec::new(),
            },
            idempotency_key: idempotency_key.map(str::to_owned),
        }
    }

    fn put(key: &str) -> TxnOp {
        TxnOp::Put {
            key: key.to_owned(),
            value: "v".to_owned(),
            lease: None,
        }
    }

    fn get(key: &str) -> TxnOp {
        TxnOp::Get {
            key: key.to_owned(),
        }
    }

    #[test]
    fn a_batch_ends_where_a_plan_touches_what_an_earlier_one_writes() {
        let independent = [
            plan(&["a"], vec![put("b")], Some("i1")),
            plan(&["a"], vec![put("c")], None),
            plan(&[], vec![TxnOp::Delete { key: "d".into() }], Some("i2")),
        ];
        assert_eq!(batchable(&independent), 3);
        // Comparing a key before a later plan writes it is the order run one by one.
        assert_eq!(
            batchable(&[plan(&["a"], vec![], None), plan(&[], vec![put("a")], None)]),
            2
        );
        for conflicting in [
            plan(&["b"], vec![], None),
            plan(&[], vec![get("c")], None),
            plan(&[], vec![put("b")], None),
            plan(&[], vec![TxnOp::Delete { key: "c".into() }], None),
            plan(&[], vec![put("z")], Some("i1")),
        ] {
            let mut plans = independent[..2].to_vec();
            plans.push(conflicting.clone());
            plans.push(plan(&[], vec![put("y")], None));
            assert_eq!(batchable(&plans), 2, "{conflicting:?}");
        }
        // A failure branch's writes count as writes.
        let mut failing = plan(&[], vec![], None);
        failing.request.failure = vec![put("f")];
        assert_eq!(batchable(&[failing, plan(&["f"], vec![], None)]), 1);
    }

    #[test]
    fn a_prefix_delete_a_get_or_a_key_named_twice_runs_alone() {
        let prefix = plan(
            &[],
            vec![TxnOp::DeletePrefix {
                prefix: "p/".into(),
            }],
            None,
        );
        assert_eq!(batchable(std::slice::from_ref(&prefix)), 0);
        assert_eq!(batchable(&[plan(&[], vec![put("a")], None), prefix]), 1);
        assert_eq!(batchable(&[plan(&[], vec![put("a"), get("a")], None)]), 0);
        // A get's value is sized before its branch runs (`sql.rs`), which a batch does not do.
        assert_eq!(batchable(&[plan(&[], vec![get("g")], None)]), 0);
        assert_eq!(
            batchable(&[
                plan(&[], vec![put("a")], None),
                plan(&[], vec![get("g")], None)
            ]),
            1
        );
        assert_eq!(batchable(&[plan(&["a"], vec![put("a")], None)]), 1);
        assert_eq!(batchable(&[]), 0);
    }
}
