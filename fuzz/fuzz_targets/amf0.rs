//! AMF0 decoding: our bounded decoder on any bytes; what it accepts re-encodes (with rml_amf0's encoder) and
//! decodes to the same values, is nested no deeper than the limit, and is safe for rml_amf0's own recursive
//! decoder too (which never sees a peer's bytes in the edge, but must not be able to overflow on them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rml_amf0::Amf0Value;
use streamr_edge::amf0;

/// Equal values, NaN equal to itself, without recursion.
fn same(a: &[Amf0Value], b: &[Amf0Value]) -> bool {
    let mut todo: Vec<(&Amf0Value, &Amf0Value)> = Vec::new();
    if a.len() != b.len() {
        return false;
    }
    todo.extend(a.iter().zip(b));
    while let Some(pair) = todo.pop() {
        match pair {
            (Amf0Value::Number(x), Amf0Value::Number(y)) => {
                if x.to_bits() != y.to_bits() && !(x.is_nan() && y.is_nan()) {
                    return false;
                }
            }
            (Amf0Value::Object(x), Amf0Value::Object(y)) => {
                if x.len() != y.len() {
                    return false;
                }
                for (k, v) in x {
                    match y.get(k) {
                        Some(w) => todo.push((v, w)),
                        None => return false,
                    }
                }
            }
            (Amf0Value::StrictArray(x), Amf0Value::StrictArray(y)) => {
                if x.len() != y.len() {
                    return false;
                }
                todo.extend(x.iter().zip(y));
            }
            (x, y) => {
                if x != y {
                    return false;
                }
            }
        }
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let Ok(values) = amf0::decode(data) else {
        return;
    };
    for v in &values {
        assert!(amf0::depth(v) <= amf0::MAX_DEPTH);
    }
    let again = amf0::decode(&amf0::encode(&values)).expect("what we encode decodes");
    assert!(same(&values, &again), "{values:?} != {again:?}");
    let _ = rml_amf0::deserialize(&mut &data[..]);
});
