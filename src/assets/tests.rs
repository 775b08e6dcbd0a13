// The tests read the store's own files, which they wrote.
#![allow(clippy::disallowed_methods)]

use super::*;

fn store() -> (tempfile::TempDir, AssetStore) {
    let d = tempfile::tempdir().unwrap();
    let s = AssetStore::open(&d.path().join("assets")).unwrap();
    (d, s)
}

/// Uploads `files` (path, bytes) and returns the upload's id.
fn upload(s: &AssetStore, files: &[(&str, &[u8])]) -> String {
    let id = s.begin_upload().unwrap().id;
    for (path, bytes) in files {
        let mut f = s.upload_file(&id, path).unwrap();
        f.write(bytes).unwrap();
        f.finish().unwrap();
    }
    id
}

fn model(
    s: &AssetStore,
    name: &str,
    version: Option<&str>,
    files: &[(&str, &[u8])],
) -> Result<(ModelView, bool), AssetError> {
    let id = upload(s, files);
    s.register_model(ModelInput {
        name: name.into(),
        version: version.map(|v| VersionInput::Text(v.into())),
        model_type: None,
        description: None,
        tags: BTreeMap::new(),
        upload: id,
    })
}

fn reference(name: &str, version: Option<&str>) -> AssetRef {
    AssetRef { kind: AssetKind::Model, name: name.into(), version: version.map(str::to_string) }
}

#[test]
fn versions_count_up_and_never_change() {
    let (_d, s) = store();
    let (v1, created) = model(&s, "m", None, &[("model/w.pkl", b"one")]).unwrap();
    assert!(created);
    assert_eq!((v1.version.as_str(), v1.id.as_str()), ("1", "azureml:m:1"));
    assert!(v1.path.ends_with("/model"), "{}", v1.path);
    assert_eq!(std::fs::read(Path::new(&v1.path).join("w.pkl")).unwrap(), b"one");
    assert_eq!((v1.size_bytes, v1.file_count), (3, 1));
    let (v2, _) = model(&s, "m", None, &[("model/w.pkl", b"two")]).unwrap();
    assert_eq!(v2.version, "2");
    // Identical content under a new version shares the copy.
    let (v3, _) = model(&s, "m", None, &[("model/w.pkl", b"one")]).unwrap();
    assert_eq!((v3.version.as_str(), v3.path.as_str()), ("3", v1.path.as_str()));
    // A version given again: the same content answers it; other content is refused.
    let (again, created) = model(&s, "m", Some("1"), &[("model/w.pkl", b"one")]).unwrap();
    assert!(!created);
    assert_eq!(again.version, "1");
    let e = model(&s, "m", Some("2"), &[("model/w.pkl", b"other")]).unwrap_err();
    assert!(matches!(e, AssetError::Conflict(_)), "{e}");
    let (named, _) = model(&s, "m", Some("v7.beta"), &[("model/w.pkl", b"x")]).unwrap();
    assert_eq!(named.version, "v7.beta");
    let (next, _) = model(&s, "m", None, &[("model/w.pkl", b"y")]).unwrap();
    assert_eq!(next.version, "4", "the next whole number after the highest");
    // The stored copy is read-only.
    let w = Path::new(&v2.path).join("w.pkl");
    assert!(std::fs::OpenOptions::new().write(true).open(&w).is_err() || unsafe_root());
}

/// Root writes read-only files anyway; the mode is still checked.
fn unsafe_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

#[test]
fn latest_skips_archived_versions_and_a_kept_version_stays() {
    let (_d, s) = store();
    model(&s, "m", None, &[("m/a", b"1")]).unwrap();
    model(&s, "m", None, &[("m/a", b"2")]).unwrap();
    assert_eq!(s.resolve_model(&reference("m", None), None).unwrap().version, "2");
    assert_eq!(s.resolve_model(&reference("m", None), Some("1")).unwrap().version, "1", "kept");
    assert_eq!(s.set_archived(AssetKind::Model, "m", Some("2"), true).unwrap(), ["2"]);
    assert_eq!(s.resolve_model(&reference("m", None), None).unwrap().version, "1");
    assert_eq!(s.resolve_model(&reference("m", Some("2")), None).unwrap().version, "2", "named exactly");
    assert_eq!(s.models(None, false).unwrap()[0].version, "1");
    assert_eq!(s.models(Some("m"), false).unwrap().len(), 1);
    assert_eq!(s.models(Some("m"), true).unwrap().len(), 2);
    s.set_archived(AssetKind::Model, "m", None, true).unwrap();
    let e = s.resolve_model(&reference("m", None), None).unwrap_err();
    assert!(e.to_string().contains("every version of model m is archived"), "{e}");
    assert!(s.models(None, false).unwrap().is_empty());
    s.set_archived(AssetKind::Model, "m", None, false).unwrap();
    assert_eq!(s.models(None, false).unwrap()[0].version, "2");
}

#[test]
fn unknown_names_and_versions_say_what_exists() {
    let (_d, s) = store();
    let e = s.resolve_model(&reference("m", Some("1")), None).unwrap_err();
    assert!(e.to_string().contains("no model is registered yet"), "{e}");
    model(&s, "alpha", None, &[("m/a", b"1")]).unwrap();
    model(&s, "beta", None, &[("m/a", b"1")]).unwrap();
    let e = s.resolve_model(&reference("gamma", Some("1")), None).unwrap_err();
    assert!(e.to_string().contains("registered models: alpha, beta"), "{e}");
    let e = s.resolve_model(&reference("alpha", Some("9")), None).unwrap_err();
    assert!(e.to_string().contains("its versions are 1"), "{e}");
    assert!(matches!(s.model("alpha", Some("9")), Err(AssetError::NotFound(_))));
}

#[test]
fn registrations_survive_a_restart_and_bad_files_are_skipped() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("assets");
    {
        let s = AssetStore::open(&root).unwrap();
        model(&s, "m", None, &[("model/w", b"1")]).unwrap();
        model(&s, "m", None, &[("model/w", b"2")]).unwrap();
        s.set_archived(AssetKind::Model, "m", Some("1"), true).unwrap();
        // An upload left open is removed by the next start.
        s.begin_upload().unwrap();
    }
    // A file whose content names another place, and one pointing outside the store.
    std::fs::write(root.join("models/m/5.json"), std::fs::read(root.join("models/m/2.json")).unwrap()).unwrap();
    let evil = std::fs::read_to_string(root.join("models/m/2.json")).unwrap().replace("\"2\"", "\"6\"");
    let evil = evil.replace("\"entry\": \"model\"", "\"entry\": \"../../../etc\"");
    std::fs::write(root.join("models/m/6.json"), evil).unwrap();
    let s = AssetStore::open(&root).unwrap();
    let versions: Vec<String> = s.models(Some("m"), true).unwrap().into_iter().map(|m| m.version).collect();
    assert_eq!(versions, ["1", "2"]);
    assert!(s.model("m", Some("1")).unwrap().archived);
    assert_eq!(std::fs::read_dir(root.join("uploads")).unwrap().count(), 0);
    // The next number comes after the skipped files too (5 and 6): they keep their names.
    let (v7, _) = model(&s, "m", None, &[("model/w", b"3")]).unwrap();
    assert_eq!(v7.version, "7");
}

#[test]
fn an_upload_holds_one_entry_and_is_consumed() {
    let (_d, s) = store();
    let e = model(&s, "m", None, &[("a", b"1"), ("b", b"2")]).unwrap_err();
    assert!(e.to_string().contains("exactly one top-level"), "{e}");
    let id = upload(&s, &[("model/a", b"1")]);
    let input = |id: &str| ModelInput {
        name: "m".into(),
        version: None,
        model_type: Some("nonsense".into()),
        description: None,
        tags: BTreeMap::new(),
        upload: id.into(),
    };
    assert!(s.register_model(input(&id)).unwrap_err().to_string().contains("custom_model"));
    let ok = ModelInput { model_type: Some("mlflow_model".into()), ..input(&id) };
    assert_eq!(s.register_model(ok).unwrap().0.model_type, "mlflow_model");
    let again = ModelInput { model_type: None, ..input(&id) };
    assert!(matches!(s.register_model(again), Err(AssetError::NotFound(_))), "consumed");
    // A single file registers as itself.
    let (file, _) = model(&s, "f", None, &[("model.onnx", b"onnx")]).unwrap();
    assert!(file.path.ends_with("/model.onnx"), "{}", file.path);
    // Code must be a folder.
    let id = upload(&s, &[("score.py", b"x")]);
    assert!(s.store_code(CodeInput { upload: id }).unwrap_err().to_string().contains("folder"));
    let id = upload(&s, &[("code/score.py", b"x")]);
    let (code, fresh) = s.store_code(CodeInput { upload: id }).unwrap();
    assert!(fresh && Path::new(&code.path).join("score.py").is_file());
    let id = upload(&s, &[("code/score.py", b"x")]);
    let (again, fresh) = s.store_code(CodeInput { upload: id }).unwrap();
    assert!(!fresh && again.path == code.path, "the same content, stored before");
}

#[test]
fn environments_register_a_conda_file_or_an_image() {
    let (_d, s) = store();
    let env = |version: Option<&str>, conda: Option<&str>, image: Option<&str>| EnvironmentInput {
        name: "e".into(),
        version: version.map(|v| VersionInput::Number(v.parse().unwrap())),
        image: image.map(str::to_string),
        conda_file: conda.map(str::to_string),
        description: None,
        tags: BTreeMap::new(),
    };
    let conda = "dependencies:\n  - python=3.12\n  - pip:\n    - joblib\n";
    let (v1, _) = s.register_environment(env(Some("1"), Some(conda), Some("img:1"))).unwrap();
    assert_eq!(v1.id, "azureml:e:1");
    assert_eq!(std::fs::read_to_string(v1.conda_file.as_ref().unwrap()).unwrap(), conda);
    assert_eq!(v1.conda_yaml.as_deref(), Some(conda));
    let (again, created) = s.register_environment(env(Some("1"), Some(conda), Some("img:1"))).unwrap();
    assert!(!created && again.conda_file == v1.conda_file);
    assert!(matches!(s.register_environment(env(Some("1"), Some(conda), None)), Err(AssetError::Conflict(_))));
    assert!(s.register_environment(env(None, None, None)).unwrap_err().to_string().contains("image"));
    assert!(s.register_environment(env(None, Some("dependencies: [[["), None)).is_err());
    let (v2, _) = s.register_environment(env(None, None, Some("img:2"))).unwrap();
    assert_eq!((v2.version.as_str(), v2.conda_file.as_deref()), ("2", None));
    assert!(s.has_environment("e") && !s.has_environment("f"));
    assert_eq!(curated_environments().len(), crate::spec::python::CURATED_SKLEARN.len());
}

#[test]
fn a_version_skipped_at_start_is_never_reused_or_overwritten() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("assets");
    let v1_file = root.join("models/x/1.json");
    {
        let s = AssetStore::open(&root).unwrap();
        model(&s, "x", None, &[("model/w", b"1")]).unwrap();
    }
    // Version 1 no longer validates (its blob moved away): it is skipped, not forgotten.
    let blob = std::fs::read_dir(root.join("blobs/sha256")).unwrap().next().unwrap().unwrap().path();
    std::fs::rename(&blob, d.path().join("moved")).unwrap();
    let before = std::fs::read(&v1_file).unwrap();
    let s = AssetStore::open(&root).unwrap();
    assert!(s.models(Some("x"), true).is_err(), "skipped");
    let (next, _) = model(&s, "x", None, &[("model/w", b"2")]).unwrap();
    assert_eq!(next.version, "2", "the next number after the file on disk");
    let e = model(&s, "x", Some("1"), &[("model/w", b"3")]).unwrap_err();
    assert!(matches!(&e, AssetError::Conflict(m) if m.contains("could not be read at start")), "{e}");
    assert_eq!(std::fs::read(&v1_file).unwrap(), before, "the skipped file is untouched");
}

#[test]
fn out_of_range_numbers_and_odd_names_are_refused_not_panicked_on() {
    let (_d, s) = store();
    let max = u64::MAX.to_string();
    model(&s, "a", Some(&max), &[("m/w", b"1")]).unwrap();
    let e = model(&s, "a", None, &[("m/w", b"2")]).unwrap_err();
    assert!(e.to_string().contains("give the next one's version yourself"), "{e}");
    // An upload whose entry is named like the store's staging folder.
    let (m, _) = model(&s, "b", None, &[("blob/w", b"1")]).unwrap();
    assert!(m.path.ends_with("/blob"), "{}", m.path);
    let (m, _) = model(&s, "c", None, &[(".blob/w", b"1")]).unwrap();
    assert!(m.path.ends_with("/.blob"), "{}", m.path);
    let float = ModelInput {
        name: "f".into(),
        version: Some(serde_json::from_value(serde_json::json!(1.5)).unwrap()),
        model_type: None,
        description: None,
        tags: BTreeMap::new(),
        upload: upload(&s, &[("m/w", b"1")]),
    };
    assert!(s.register_model(float).unwrap_err().to_string().contains("a string (\"1\", \"1.0\") or a whole number"));
    let curated = EnvironmentInput {
        name: "curated".into(),
        version: None,
        image: Some("i".into()),
        conda_file: None,
        description: None,
        tags: BTreeMap::new(),
    };
    assert!(s.register_environment(curated).unwrap_err().to_string().contains("reserved"));
}

#[test]
fn hostile_metadata_is_skipped_at_start() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("assets");
    {
        let s = AssetStore::open(&root).unwrap();
        model(&s, "m", None, &[("model/w", b"1")]).unwrap();
    }
    let good = std::fs::read_to_string(root.join("models/m/1.json")).unwrap();
    // Out-of-range numbers (a year past 9999 once panicked the formatter; seq would overflow).
    std::fs::write(
        root.join("models/m/2.json"),
        good.replace("\"version\": \"1\"", "\"version\": \"2\"").replace("\"seq\": 1", "\"seq\": 18446744073709551615"),
    )
    .unwrap();
    let late = good.replace("\"version\": \"1\"", "\"version\": \"3\"");
    let late = regex_free_replace_created(&late, "300000000000000");
    std::fs::write(root.join("models/m/3.json"), late).unwrap();
    // A blob planted as a link to another folder.
    std::os::unix::fs::symlink("/etc", root.join(format!("blobs/sha256/{}", "a".repeat(64)))).unwrap();
    let linked = good.replace("\"version\": \"1\"", "\"version\": \"4\"");
    let digest =
        serde_json::from_str::<serde_json::Value>(&good).unwrap()["blob"]["digest"].as_str().unwrap().to_string();
    let linked = linked.replace(&digest, &"a".repeat(64)).replace("\"entry\": \"model\"", "\"entry\": \"passwd\"");
    std::fs::write(root.join("models/m/4.json"), linked).unwrap();
    // A write cut short is cleaned; a user's hidden file is not touched.
    std::fs::write(root.join("models/m/.5.json.tmp"), "{").unwrap();
    std::fs::write(root.join("models/m/.notes.json"), "{}").unwrap();
    let s = AssetStore::open(&root).unwrap();
    let versions: Vec<String> = s.models(Some("m"), true).unwrap().into_iter().map(|m| m.version).collect();
    assert_eq!(versions, ["1"]);
    assert!(!root.join("models/m/.5.json.tmp").exists());
    assert!(root.join("models/m/.notes.json").exists());
    let (v5, _) = model(&s, "m", None, &[("model/w", b"5")]).unwrap();
    assert_eq!(v5.version, "5", "after every version with a file");
}

/// `created_ms` set to `value` in a record's text.
fn regex_free_replace_created(text: &str, value: &str) -> String {
    let at = text.find("\"created_ms\": ").unwrap() + "\"created_ms\": ".len();
    let end = at + text[at..].find(|c: char| !c.is_ascii_digit()).unwrap();
    format!("{}{value}{}", &text[..at], &text[end..])
}

#[test]
fn a_relative_root_gives_absolute_paths() {
    let rel = format!("target/test-assets-{}", uuid::Uuid::new_v4().simple());
    let s = AssetStore::open(Path::new(&rel)).unwrap();
    let (m, _) = model(&s, "m", None, &[("model/w", b"1")]).unwrap();
    assert!(Path::new(&m.path).is_absolute(), "{}", m.path);
    drop(s);
    let _ = std::fs::remove_dir_all(&rel);
}
