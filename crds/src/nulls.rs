//! `null` where upstream's Go types have a nil slice, map or zero value: upstream's API
//! decodes `secrets: null` (a list left empty with only a comment under it) as an empty
//! list, so kdfed does too, offline and online.

use serde::{Deserialize, Deserializer};

/// Deserializes `null` as the type's default (an empty list or map, a zero value).
pub fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Deserialize, Debug, Default, PartialEq)]
    struct Holder {
        #[serde(default, deserialize_with = "super::or_default")]
        list: Vec<String>,
        #[serde(default, deserialize_with = "super::or_default")]
        map: BTreeMap<String, String>,
    }

    #[test]
    fn null_absent_and_empty_are_the_same() {
        let null: Holder = serde_json::from_str(r#"{"list": null, "map": null}"#).expect("null");
        let absent: Holder = serde_json::from_str("{}").expect("absent");
        let empty: Holder = serde_json::from_str(r#"{"list": [], "map": {}}"#).expect("empty");
        assert_eq!(null, Holder::default());
        assert_eq!(absent, Holder::default());
        assert_eq!(empty, Holder::default());
        let full: Holder = serde_json::from_str(r#"{"list": ["a"], "map": {"k": "v"}}"#).expect("full");
        assert_eq!(full.list, vec!["a"]);
        assert!(serde_json::from_str::<Holder>(r#"{"list": "a"}"#).is_err(), "a string is still not a list");
    }
}
