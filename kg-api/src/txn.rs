//! Wire types of `POST /api/txn`: etcd's If/Then/Else transaction in plain JSON (no base64).
//!
//! Every compare is evaluated, then every op of the branch they pick is applied, atomically;
//! all its writes share one revision.

use serde::{Deserialize, Serialize};

#[cfg(feature = "utoipa")]
use utoipa::ToSchema;

use crate::KeyRecord;

/// The most compares, and the most ops in each branch, one transaction may carry (etcd's
/// `--max-txn-ops` default).
pub const MAX_TXN_OPS: usize = 128;

/// `POST /api/txn` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TxnRequest {
    /// All must hold for `success` to run; otherwise `failure` runs. None: `success` runs.
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(max_items = 128))]
    pub compare: Vec<Compare>,
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(max_items = 128))]
    pub success: Vec<TxnOp>,
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(max_items = 128))]
    pub failure: Vec<TxnOp>,
}

/// One condition on one key. A missing key has revision, create_revision and version 0, does
/// not exist, and fails every comparison of its value (as in etcd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Compare {
    #[cfg_attr(feature = "utoipa", schema(min_length = 1, max_length = 512))]
    pub key: String,
    pub target: CompareTarget,
    pub op: CompareOp,
    /// A string for `value` (compared byte by byte), an integer for the revisions and
    /// `version`, a boolean for `exists`.
    pub value: CompareValue,
}

/// What of the key a [`Compare`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CompareTarget {
    Value,
    /// The key's mod_revision.
    Revision,
    CreateRevision,
    Version,
    /// Whether the key is live; only `==` and `!=`.
    Exists,
}

impl CompareTarget {
    /// The target's name in the JSON (`create_revision`), for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareTarget::Value => "value",
            CompareTarget::Revision => "revision",
            CompareTarget::CreateRevision => "create_revision",
            CompareTarget::Version => "version",
            CompareTarget::Exists => "exists",
        }
    }
}

/// How a [`Compare`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub enum CompareOp {
    #[serde(rename = "==")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
    #[serde(rename = "<")]
    Less,
    #[serde(rename = ">")]
    Greater,
}

impl CompareOp {
    /// Whether `ordering` (the key's against the compare's value) satisfies this op.
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        matches!(
            (self, ordering),
            (CompareOp::Equal, Equal)
                | (CompareOp::NotEqual, Less | Greater)
                | (CompareOp::Less, Less)
                | (CompareOp::Greater, Greater)
        )
    }
}

/// The operand of a [`Compare`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(untagged)]
pub enum CompareValue {
    Bool(bool),
    Integer(i64),
    Text(String),
}

/// One operation of a branch, applied in order: a `get` sees the branch's earlier writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum TxnOp {
    Put {
        #[cfg_attr(feature = "utoipa", schema(min_length = 1, max_length = 512))]
        key: String,
        value: String,
        /// A live lease to attach the key to; without it the key has none. Never `null`.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "crate::types::whole::optional"
        )]
        #[cfg_attr(feature = "utoipa", schema(minimum = 1, nullable = false))]
        lease: Option<i64>,
    },
    Delete {
        #[cfg_attr(feature = "utoipa", schema(min_length = 1, max_length = 512))]
        key: String,
    },
    DeletePrefix {
        #[cfg_attr(feature = "utoipa", schema(min_length = 1, max_length = 512))]
        prefix: String,
    },
    Get {
        #[cfg_attr(feature = "utoipa", schema(min_length = 1, max_length = 512))]
        key: String,
    },
}

/// `POST /api/txn` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct TxnResponse {
    /// Whether every compare held, so that `success` ran.
    pub succeeded: bool,
    /// The revision of the transaction's writes; the current revision when it changed nothing.
    pub revision: i64,
    /// One per op of the branch that ran, in order.
    pub results: Vec<TxnResult>,
}

/// What one op of the branch did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TxnResult {
    Put {
        key: String,
        /// The key's create_revision and version after the put.
        create_revision: i64,
        version: i64,
    },
    Delete {
        key: String,
        /// 1, or 0 when the key did not exist.
        deleted: u64,
    },
    DeletePrefix {
        prefix: String,
        deleted: u64,
    },
    Get {
        key: String,
        /// `null` when the key does not exist.
        kv: Option<KeyRecord>,
    },
}
