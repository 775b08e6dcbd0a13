//! References to registered assets, as Azure writes them in a deployment: `azureml:NAME:VERSION`,
//! `azureml:NAME@latest`, and the long `azureml://.../models/NAME/versions/VERSION` (or
//! `.../labels/latest`) forms. Only the shape is checked here: whether the name is registered
//! is the asset store's business, asked by the control plane when a deployment is created.

use super::SpecError;

/// Which kind of asset a reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AssetKind {
    Model,
    Environment,
}

impl AssetKind {
    /// The word in messages and in the long form's path (`models`, `environments`).
    pub fn word(self) -> &'static str {
        match self {
            AssetKind::Model => "model",
            AssetKind::Environment => "environment",
        }
    }

    fn segment(self) -> &'static str {
        match self {
            AssetKind::Model => "models",
            AssetKind::Environment => "environments",
        }
    }
}

/// A parsed reference: a name, and a version or the `latest` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetRef {
    pub kind: AssetKind,
    pub name: String,
    /// `None`: `@latest` (the most recently registered version that is not archived).
    pub version: Option<String>,
}

impl AssetRef {
    /// The short form, `azureml:NAME:VERSION` or `azureml:NAME@latest`.
    pub fn short(&self) -> String {
        match &self.version {
            Some(v) => format!("azureml:{}:{v}", self.name),
            None => format!("azureml:{}@latest", self.name),
        }
    }
}

/// The longest asset name (Azure's limit).
pub const MAX_ASSET_NAME: usize = 255;
/// The longest asset version (Azure's limit).
pub const MAX_ASSET_VERSION: usize = 30;

/// Checks an asset name: 1 to 255 of `A-Z a-z 0-9 - _ .`, starting with a letter or digit. The
/// name is also a folder name in the store, which this rule keeps safe (no `/`, no `..`).
pub fn validate_asset_name(kind: AssetKind, name: &str) -> Result<(), SpecError> {
    check_token(name, MAX_ASSET_NAME).map_err(|why| SpecError::invalid(format!("{} name {name:?} {why}", kind.word())))
}

/// Checks an asset version: 1 to 30 of `A-Z a-z 0-9 - _ .`, starting with a letter or digit.
pub fn validate_asset_version(kind: AssetKind, version: &str) -> Result<(), SpecError> {
    check_token(version, MAX_ASSET_VERSION)
        .map_err(|why| SpecError::invalid(format!("{} version {version:?} {why}", kind.word())))
}

fn check_token(s: &str, max: usize) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if s.is_empty() || s.len() > max {
        return Err(format!("must be 1 to {max} characters"));
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) || !s.chars().all(ok_char) {
        return Err("may hold only letters, digits, '-', '_' and '.', and must start with a letter or digit".into());
    }
    Ok(())
}

/// Parses `text` as a reference to a registered asset of `kind`. `Ok(None)`: the text is not
/// an `azureml:` reference at all. A reference of the wrong shape is an error saying what to
/// write.
pub fn parse_reference(kind: AssetKind, text: &str) -> Result<Option<AssetRef>, SpecError> {
    let what = kind.word();
    let expected = || {
        SpecError::invalid(format!(
            "{what} {text:?} is not a reference this server reads: write `azureml:NAME:VERSION` or `azureml:NAME@latest` \
             (or the long form azureml://.../{}/NAME/versions/VERSION)",
            kind.segment()
        ))
    };
    if let Some(path) = text.strip_prefix("azureml://") {
        // The asset's part is at the end (`.../models/NAME/versions/V`), after a workspace
        // path whose own names may be anything, `models` included: read it from the end.
        let parts: Vec<&str> = path.split('/').collect();
        let (name, version) = match parts.as_slice() {
            [.., seg, name, "versions", v] if *seg == kind.segment() => (*name, Some((*v).to_string())),
            [.., seg, name, "labels", "latest"] if *seg == kind.segment() => (*name, None),
            [.., seg, name] if *seg == kind.segment() => (*name, None),
            _ => return Err(expected()),
        };
        return build(kind, name, version).map(Some);
    }
    let Some(rest) = text.strip_prefix("azureml:") else {
        return Ok(None);
    };
    if let Some((name, label)) = rest.split_once('@') {
        if label != "latest" {
            return Err(SpecError::invalid(format!(
                "{what} {text:?}: the only label is `latest` (azureml:{name}@latest), or name a version (azureml:{name}:1)"
            )));
        }
        return build(kind, name, None).map(Some);
    }
    match rest.split_once(':') {
        Some((name, version)) => build(kind, name, Some(version.to_string())).map(Some),
        None => Err(SpecError::invalid(format!(
            "{what} {text:?} names no version: write azureml:{rest}:VERSION or azureml:{rest}@latest"
        ))),
    }
}

fn build(kind: AssetKind, name: &str, version: Option<String>) -> Result<AssetRef, SpecError> {
    validate_asset_name(kind, name)?;
    if let Some(v) = &version {
        validate_asset_version(kind, v)?;
    }
    Ok(AssetRef { kind, name: name.to_string(), version })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(s: &str) -> Result<Option<AssetRef>, SpecError> {
        parse_reference(AssetKind::Model, s)
    }

    #[test]
    fn the_short_and_long_forms_parse() {
        let r = model("azureml:my-model:1").unwrap().unwrap();
        assert_eq!((r.name.as_str(), r.version.as_deref()), ("my-model", Some("1")));
        assert_eq!(r.short(), "azureml:my-model:1");
        let r = model("azureml:my-model@latest").unwrap().unwrap();
        assert_eq!((r.name.as_str(), r.version), ("my-model", None));
        let r =
            model("azureml://subscriptions/s/resourceGroups/g/workspaces/w/models/m.x_1/versions/3").unwrap().unwrap();
        assert_eq!((r.name.as_str(), r.version.as_deref()), ("m.x_1", Some("3")));
        let r =
            model("azureml://subscriptions/s/resourceGroups/models/workspaces/w/models/m/versions/2").unwrap().unwrap();
        assert_eq!((r.name.as_str(), r.version.as_deref()), ("m", Some("2")), "a group named models");
        let r = parse_reference(
            AssetKind::Environment,
            "azureml://registries/azureml/environments/sklearn-1.5/labels/latest",
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.name.as_str(), r.version), ("sklearn-1.5", None));
        assert_eq!(model("./model").unwrap(), None);
    }

    #[test]
    fn wrong_shapes_say_what_to_write() {
        for bad in [
            "azureml:my-model",
            "azureml:my-model@stable",
            "azureml:../x:1",
            "azureml:m:1/2",
            "azureml:m:",
            "azureml:",
            "azureml://registries/r/models/m/versions",
            "azureml://registries/r/environments/e/versions/1",
            "azureml:.hidden:1",
        ] {
            let e = model(bad).unwrap_err();
            assert!(e.message.contains("azureml:") || e.message.contains("model"), "{bad}: {e}");
        }
        assert!(model("azureml:my-model").unwrap_err().message.contains("azureml:my-model@latest"));
        let long = format!("azureml:{}:1", "a".repeat(256));
        assert!(model(&long).unwrap_err().message.contains("1 to 255"));
    }
}
