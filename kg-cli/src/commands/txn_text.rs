//! `kg txn`'s text form, etcdctl txn's: compares, a blank line, the success ops, a blank line,
//! the failure ops, one per line.
//!
//! ```text
//! value("acct/a") = "10"
//! mod("acct/b") < "40"
//!
//! put acct/a 7
//! put acct/b "a value with spaces"
//! get acct/a
//!
//! get acct/a
//! ```
//!
//! Words are split as a POSIX shell splits them (the `shlex` crate), so a key or value with
//! spaces or quotes is written in quotes. A value with a line break needs the JSON form.

use kg_api::{Compare, CompareOp, CompareTarget, CompareValue, TxnOp, TxnRequest};

/// Parses the text form; `Err` names the line and what is wrong with it.
pub fn parse(text: &str) -> Result<TxnRequest, String> {
    let mut request = TxnRequest::default();
    // 0: compares, 1: success, 2: failure. Each blank line ends a section, an empty one too,
    // as etcdctl reads it: two blank lines after the compares leave the success ops empty,
    // and what follows is the failure branch.
    let mut section = 0;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() {
            section += 1;
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let at = |err: String| format!("line {number}: {err}");
        match section {
            0 => request.compare.push(compare_line(line).map_err(at)?),
            1 => request.success.push(op_line(line).map_err(at)?),
            2 => request.failure.push(op_line(line).map_err(at)?),
            _ => {
                return Err(at(
                    "a transaction has three parts (compares, success, failure), \
                     each ended by a blank line"
                        .to_owned(),
                ))
            }
        }
    }
    Ok(request)
}

fn words(line: &str) -> Result<Vec<String>, String> {
    shlex::split(line).ok_or_else(|| format!("unbalanced quotes in {line:?}"))
}

/// `TARGET("KEY") OP "VALUE"`, as etcdctl writes a compare.
pub fn compare_line(line: &str) -> Result<Compare, String> {
    let usage = || {
        format!(
            "expected a compare such as value(\"k\") = \"v\" or mod(\"k\") > \"3\" \
             (targets: value, mod, create, ver, exists; ops: =, !=, <, >), got {line:?}"
        )
    };
    let (target, rest) = line.split_once('(').ok_or_else(usage)?;
    if target.trim() == "lease" {
        // etcd compares a key's lease id; KeyGrid's compares have no such target.
        let key = rest.split_once(')').map_or(rest, |(key, _)| key);
        return Err(format!(
            "lease({key}) compares are not supported: KeyGrid compares value, mod, create, ver \
             and exists (`kg get KEY -o json` shows a key's lease)"
        ));
    }
    let target = match target.trim() {
        "value" => CompareTarget::Value,
        "mod" | "revision" => CompareTarget::Revision,
        "create" | "create_revision" => CompareTarget::CreateRevision,
        "ver" | "version" => CompareTarget::Version,
        "exists" => CompareTarget::Exists,
        _ => return Err(usage()),
    };
    let words = words(rest)?;
    let [key, op, value] = words.as_slice() else {
        return Err(usage());
    };
    // The closing parenthesis ends the key's word, quoted or not.
    let key = key.strip_suffix(')').ok_or_else(usage)?;
    let op = match op.as_str() {
        "=" | "==" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        "<" => CompareOp::Less,
        ">" => CompareOp::Greater,
        _ => return Err(usage()),
    };
    let value = match target {
        CompareTarget::Value => CompareValue::Text(value.clone()),
        CompareTarget::Exists => CompareValue::Bool(
            value
                .parse()
                .map_err(|_| format!("exists compares with true or false, not {value:?}"))?,
        ),
        _ => CompareValue::Integer(
            value
                .parse()
                .map_err(|_| format!("a revision or version is an integer, not {value:?}"))?,
        ),
    };
    Ok(Compare {
        key: key.to_owned(),
        target,
        op,
        value,
    })
}

/// `put KEY VALUE [--lease ID]` (or `--lease=ID`, as etcdctl writes it), `get KEY`, `del KEY`
/// or `del --prefix PREFIX`.
pub fn op_line(line: &str) -> Result<TxnOp, String> {
    let words = words(line)?;
    let mut words: Vec<&str> = words.iter().map(String::as_str).collect();
    // etcdctl's `--flag=VALUE` reads as `--flag VALUE`.
    for flag in ["--lease", "--prefix"] {
        let joined = format!("{flag}=");
        if let Some(at) = words.iter().position(|word| word.starts_with(&joined)) {
            let value = &words[at][joined.len()..];
            words.splice(at..=at, [flag, value]);
        }
    }
    // Flags only where flags go, after the op's own words: a value or key that starts with
    // `--` (quoted, `put k '--x'`) is a value or a key.
    let (positional, allowed): (usize, &[&str]) = match words.first() {
        Some(&"put") => (3, &["--lease"]),
        Some(&"del" | &"delete") => (1, &["--prefix"]),
        _ => (2, &[]),
    };
    if let Some(flag) = words
        .iter()
        .skip(positional)
        .find(|word| word.starts_with("--") && !allowed.contains(word))
    {
        return Err(format!(
            "{flag} is not supported here (put takes --lease, del takes --prefix)"
        ));
    }
    Ok(match words.as_slice() {
        ["put", key, value] => TxnOp::Put {
            key: (*key).to_owned(),
            value: (*value).to_owned(),
            lease: None,
        },
        ["put", key, value, "--lease", lease] => TxnOp::Put {
            key: (*key).to_owned(),
            value: (*value).to_owned(),
            lease: Some(
                lease
                    .parse()
                    .map_err(|_| format!("a lease is an integer id, not {lease:?}"))?,
            ),
        },
        ["get", key] => TxnOp::Get {
            key: (*key).to_owned(),
        },
        ["del" | "delete", "--prefix", prefix] | ["del" | "delete", prefix, "--prefix"] => {
            TxnOp::DeletePrefix {
                prefix: (*prefix).to_owned(),
            }
        }
        ["del" | "delete", key] => TxnOp::Delete {
            key: (*key).to_owned(),
        },
        _ => {
            return Err(format!(
                "expected put KEY VALUE [--lease ID], get KEY, del KEY or del --prefix PREFIX, \
                 got {line:?}"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> TxnOp {
        TxnOp::Put {
            key: key.to_owned(),
            value: value.to_owned(),
            lease: None,
        }
    }

    #[test]
    fn the_three_parts_parse_as_etcdctl_writes_them() {
        let text = "value(\"acct/a\") = \"10\"\nmod(\"acct/b\") < \"40\"\nexists(new) != false\n\n\
                    put acct/a 7\nput \"acct/b\" 'two words' --lease 9\nget acct/a\n\
                    del old --prefix\ndel x\n\n# the other branch\nget acct/a\n";
        let request = parse(text).unwrap();
        assert_eq!(
            request.compare,
            [
                Compare {
                    key: "acct/a".to_owned(),
                    target: CompareTarget::Value,
                    op: CompareOp::Equal,
                    value: CompareValue::Text("10".to_owned()),
                },
                Compare {
                    key: "acct/b".to_owned(),
                    target: CompareTarget::Revision,
                    op: CompareOp::Less,
                    value: CompareValue::Integer(40),
                },
                Compare {
                    key: "new".to_owned(),
                    target: CompareTarget::Exists,
                    op: CompareOp::NotEqual,
                    value: CompareValue::Bool(false),
                },
            ]
        );
        assert_eq!(
            request.success,
            [
                put("acct/a", "7"),
                TxnOp::Put {
                    key: "acct/b".to_owned(),
                    value: "two words".to_owned(),
                    lease: Some(9),
                },
                TxnOp::Get {
                    key: "acct/a".to_owned()
                },
                TxnOp::DeletePrefix {
                    prefix: "old".to_owned()
                },
                TxnOp::Delete {
                    key: "x".to_owned()
                },
            ]
        );
        assert_eq!(
            request.failure,
            [TxnOp::Get {
                key: "acct/a".to_owned()
            }]
        );
    }

    #[test]
    fn an_empty_success_branch_leaves_the_next_ops_to_the_failure_branch() {
        let request = parse("value(\"a\") = \"1\"\n\n\nput a overwritten\n\n").unwrap();
        assert_eq!(request.compare.len(), 1);
        assert!(request.success.is_empty());
        assert_eq!(request.failure, [put("a", "overwritten")]);
        let request = parse("\n\nput a 2\n").unwrap();
        assert!(request.compare.is_empty() && request.success.is_empty());
        assert_eq!(request.failure, [put("a", "2")]);
    }

    #[test]
    fn prefix_equals_reads_as_prefix_and_other_flags_are_named() {
        let request = parse("\ndel --prefix=w/\n").unwrap();
        assert_eq!(
            request.success,
            [TxnOp::DeletePrefix {
                prefix: "w/".to_owned()
            }]
        );
        assert_eq!(parse("\nput k '--x'\n").unwrap().success, [put("k", "--x")]);
        // get takes no flag at all: its prefix form is not a key.
        let err = parse("\nget --prefix=w/\n").unwrap_err();
        assert!(err.starts_with("line 2: expected put KEY VALUE"), "{err}");
        for line in ["get w/ --prefix", "del a --prev-kv", "put a 1 --ttl=5"] {
            let err = parse(&format!("\n{line}\n")).unwrap_err();
            assert!(err.starts_with("line 2: --"), "{line}: {err}");
        }
    }

    #[test]
    fn without_compares_a_blank_first_line_starts_the_success_ops() {
        let request = parse("\nput a 1\n").unwrap();
        assert!(request.compare.is_empty());
        assert_eq!(request.success, [put("a", "1")]);
        assert!(request.failure.is_empty());
    }

    #[test]
    fn etcdctls_lease_equals_reads_as_lease_and_a_lease_compare_is_named() {
        let request = parse("\nput a 1 --lease=7\n").unwrap();
        assert_eq!(
            request.success,
            [TxnOp::Put {
                key: "a".to_owned(),
                value: "1".to_owned(),
                lease: Some(7),
            }]
        );
        let err = parse("lease(\"a\") = \"7\"\n").unwrap_err();
        assert!(
            err.starts_with("line 1: lease(\"a\") compares are not supported"),
            "{err}"
        );
    }

    #[test]
    fn mistakes_name_their_line() {
        for (text, wanted) in [
            ("value(a) ~ 1\n", "line 1: expected a compare"),
            ("size(a) = 1\n", "line 1: expected a compare"),
            (
                "mod(a) > x\n",
                "line 1: a revision or version is an integer",
            ),
            ("\nput a\n", "line 2: expected put KEY VALUE"),
            ("\nput a \"1\n", "line 2: unbalanced quotes"),
            (
                "\nget a\n\nget a\n\nget a\n",
                "line 6: a transaction has three parts",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(wanted), "{text:?}: {err}");
        }
    }
}
