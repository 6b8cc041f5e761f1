//! The JSON Schema of the profile format (for editors: YAML language servers read it
//! from a `# yaml-language-server: $schema=…` comment), derived from the model types so
//! it cannot drift from what rackseed accepts.

use super::model::Profile;

/// The schema of a profile file, pretty-printed JSON.
pub fn profile_schema() -> String {
    let mut schema = schemars::schema_for!(Profile);
    schema.insert(
        "title".into(),
        serde_json::Value::String("rackseed profile".into()),
    );
    schema.insert(
        "description".into(),
        serde_json::Value::String(
            "A class of machine: root RAID and file system, ZFS pools, bonds, VLANs, bridges, accounts. See `rackseed profile check`.".into(),
        ),
    );
    let mut out = serde_json::to_string_pretty(&schema).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_the_sections_and_forbids_unknown_keys() {
        let s: serde_json::Value = serde_json::from_str(&profile_schema()).unwrap();
        assert_eq!(s["title"], "rackseed profile");
        let props = s["properties"].as_object().unwrap();
        for key in ["storage", "network", "group", "replication", "packages"] {
            assert!(props.contains_key(key), "{key} missing");
        }
        assert_eq!(s["additionalProperties"], false);
        let text = profile_schema();
        assert!(
            text.contains("802.3ad") && text.contains("raidz2"),
            "enums are listed"
        );
    }
}
