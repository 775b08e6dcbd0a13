//! What a Python scoring script (`code_configuration.scoring_script: score.py`) needs, read from
//! the deployment YAML: the script, its code folder, the model folder, and the environment
//! (`environment.conda_file` → a venv built from it; `environment.python` → an interpreter as
//! is). Pure: the conda file is read and checked here, so a malformed one is a 400 at create,
//! and the build itself (minutes, network) happens later, off the request path.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::SpecError;

/// Where a Python deployment's interpreter comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PythonEnvironment {
    /// No environment given: `python3` on the server's PATH (or the `--python` override).
    Default,
    /// `environment.python` (a local extension): this interpreter, as is; no build.
    Interpreter(PathBuf),
    /// A venv to build (and cache) from these requirements.
    Build(EnvironmentBuild),
}

/// A venv to build: from a conda file, or from a curated Azure environment's package set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentBuild {
    /// Where the packages come from, for messages (`conda.yaml`, `curated sklearn-1.5`).
    pub source: String,
    /// `python=X.Y` of the conda file, if it names one.
    pub python_version: Option<String>,
    /// pip requirement lines: the conda pins as `name==ver`, then the `pip:` section as written.
    pub requirements: Vec<String>,
}

/// A Python deployment's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonScript {
    /// `code_configuration.code`: the folder that is the script's working directory and on
    /// `sys.path` (`AML_APP_ROOT`).
    pub code_dir: PathBuf,
    /// `code_configuration.scoring_script`, relative to `code_dir` (`AZUREML_ENTRY_SCRIPT`).
    pub script: String,
    /// `model.path`: appears under `AZUREML_MODEL_DIR` with its base name, as on Azure.
    pub model_path: PathBuf,
    /// The interpreter or environment.
    pub environment: PythonEnvironment,
}

/// Conda package names whose pip name differs.
const CONDA_TO_PIP: &[(&str, &str)] = &[("pytorch", "torch"), ("py-xgboost", "xgboost"), ("pytorch-cpu", "torch")];

/// Conda-only packages a venv does not need (the interpreter and its tooling).
const CONDA_ONLY: &[&str] = &["python", "pip", "setuptools", "wheel", "cudatoolkit", "mkl", "nomkl", "libgcc-ng"];

/// Checks a Python deployment's files and environment.
pub fn script(
    code: Option<&Path>,
    scoring_script: &str,
    model_path: &Path,
    environment: Option<&Value>,
) -> Result<PythonScript, SpecError> {
    let Some(code_dir) = code else {
        return Err(SpecError::invalid(format!(
            "scoring_script {scoring_script} needs code_configuration.code: the folder that holds it"
        )));
    };
    let path = code_dir.join(scoring_script);
    if !path.is_file() {
        return Err(SpecError::invalid(format!(
            "scoring_script {scoring_script} is not a file in code_configuration.code ({})",
            code_dir.display()
        )));
    }
    std::fs::metadata(model_path)
        .map_err(|e| SpecError::invalid(format!("model.path {} cannot be read: {e}", model_path.display())))?;
    Ok(PythonScript {
        code_dir: code_dir.to_path_buf(),
        script: scoring_script.to_string(),
        model_path: model_path.to_path_buf(),
        environment: environment_of(environment)?,
    })
}

fn environment_of(environment: Option<&Value>) -> Result<PythonEnvironment, SpecError> {
    match environment {
        None | Some(Value::Null) => Ok(PythonEnvironment::Default),
        Some(Value::String(reference)) => curated(reference),
        Some(Value::Object(env)) => {
            if let Some(python) = env.get("python") {
                let Some(p) = python.as_str().filter(|p| !p.is_empty()) else {
                    return Err(SpecError::invalid("environment.python must be the path of a Python interpreter"));
                };
                return Ok(PythonEnvironment::Interpreter(PathBuf::from(p)));
            }
            match env.get("conda_file") {
                Some(Value::String(file)) => conda_file(Path::new(file)).map(PythonEnvironment::Build),
                Some(_) => Err(SpecError::invalid("environment.conda_file must be the path of a conda YAML file")),
                // An image alone (no conda file): the image's Python cannot run here.
                None => Ok(PythonEnvironment::Default),
            }
        }
        Some(_) => Err(SpecError::invalid(
            "environment must be a mapping (conda_file: ./conda.yaml, or python: /path/to/bin/python)",
        )),
    }
}

/// The curated scikit-learn environments listed by `GET /v1/environments/curated` (any
/// `sklearn-X.Y` reference maps; these are the ones Azure's samples and studio offer).
pub const CURATED_SKLEARN: &[&str] = &["1.0", "1.1", "1.5"];

/// The `sklearn-X.Y` version a curated environment reference names, if it names one
/// (`azureml://registries/azureml/environments/sklearn-1.5/labels/latest`,
/// `azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu:1`).
pub fn curated_sklearn_version(reference: &str) -> Option<String> {
    let lower = reference.to_ascii_lowercase();
    lower.split(['/', ':', '@']).find_map(|part| {
        let rest = part.strip_prefix("sklearn-").or_else(|| part.strip_prefix("azureml-sklearn-"))?;
        let v: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        Some(v.trim_end_matches('.').to_string()).filter(|v| !v.is_empty())
    })
}

/// The pip set a curated scikit-learn environment maps to.
pub fn curated_requirements(version: &str) -> Vec<String> {
    vec![
        format!("scikit-learn=={version}.*"),
        "numpy".to_string(),
        "scipy".to_string(),
        "pandas".to_string(),
        "joblib".to_string(),
        "inference-schema[numpy-support]".to_string(),
    ]
}

/// `azureml:name:version` and `azureml://registries/...` references that reach the hook. The
/// curated scikit-learn environments map to their pip set (cheap, and what most samples use);
/// the control plane resolves registered ones before this, so any other is an error here.
fn curated(reference: &str) -> Result<PythonEnvironment, SpecError> {
    if let Some(version) = curated_sklearn_version(reference) {
        return Ok(PythonEnvironment::Build(EnvironmentBuild {
            source: format!("curated sklearn-{version} ({reference})"),
            python_version: None,
            requirements: curated_requirements(&version),
        }));
    }
    if reference.starts_with("azureml:") {
        return Err(SpecError::invalid(format!(
            "environment {reference:?} is neither registered here nor a curated environment this server maps: \
             register it (switchyard environment create -f env.yml), \
             or write `environment: {{conda_file: ./conda.yaml}}` with the packages score.py needs"
        )));
    }
    Err(SpecError::invalid(format!(
        "environment must be a mapping (conda_file: ./conda.yaml, or python: /path/to/bin/python), got {reference:?}"
    )))
}

/// Reads a conda file into pip requirements.
pub fn conda_file(path: &Path) -> Result<EnvironmentBuild, SpecError> {
    // Read when a deployment is put, on an admin worker: a FIFO or a hung mount must not stall
    // it (see `sys::files`).
    let text = crate::sys::files::read_text_bounded(
        path,
        super::limits::MAX_DOCUMENT_BYTES as u64,
        crate::sys::files::READ_DEADLINE,
    )
    .map_err(|e| SpecError::invalid(format!("environment.conda_file cannot be read: {e}")))?;
    let mut build = parse_conda(&text, &path.display().to_string())?;
    build.source = path.display().to_string();
    Ok(build)
}

/// Parses conda YAML text: `dependencies:` holds `name=ver` strings and a `pip:` list.
pub fn parse_conda(text: &str, what: &str) -> Result<EnvironmentBuild, SpecError> {
    let doc = super::yaml_to_json(text, what)?;
    let deps = match doc.get("dependencies") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(deps)) => deps.clone(),
        Some(_) => return Err(SpecError::invalid(format!("{what}: dependencies must be a list"))),
    };
    let mut python_version = None;
    let mut conda = Vec::new();
    let mut pip = Vec::new();
    for dep in deps {
        match dep {
            Value::String(s) => {
                let spec = s.rsplit("::").next().unwrap_or(&s).trim().to_string();
                let name_end = spec.find(|c: char| "=<>!~ ".contains(c)).unwrap_or(spec.len());
                let name = spec[..name_end].to_ascii_lowercase();
                let constraint = spec[name_end..].trim();
                if name == "python" {
                    python_version = python_of(constraint);
                } else if !CONDA_ONLY.contains(&name.as_str()) && !name.is_empty() {
                    let pip_name = CONDA_TO_PIP.iter().find(|(c, _)| *c == name).map_or(name.as_str(), |(_, p)| p);
                    conda.push(format!("{pip_name}{}", pip_constraint(constraint)));
                }
            }
            Value::Object(map) => match map.get("pip") {
                Some(Value::Array(lines)) => {
                    for line in lines {
                        let Some(line) = line.as_str() else {
                            return Err(SpecError::invalid(format!("{what}: the pip: list holds a non-string {line}")));
                        };
                        pip.push(line.to_string());
                    }
                }
                _ => return Err(SpecError::invalid(format!("{what}: a mapping in dependencies must be `pip: [...]`"))),
            },
            other => return Err(SpecError::invalid(format!("{what}: unexpected dependency {other}"))),
        }
    }
    conda.extend(pip);
    Ok(EnvironmentBuild { source: what.to_string(), python_version, requirements: conda })
}

/// `=3.12`, `==3.12.1`, `=3.12.*` → `3.12`.
fn python_of(constraint: &str) -> Option<String> {
    let v = constraint.trim_start_matches('=').trim();
    let mut parts = v.split('.');
    let (major, minor) = (parts.next()?, parts.next()?);
    let minor: String = minor.chars().take_while(char::is_ascii_digit).collect();
    (major.chars().all(|c| c.is_ascii_digit()) && !major.is_empty() && !minor.is_empty())
        .then(|| format!("{major}.{minor}"))
}

/// A conda version constraint as pip writes it: `=1.7.0` → `==1.7.0`, `=1.7` → `==1.7.*`
/// (conda's single `=` is a prefix match), a build string (`=1.7.0=py312_0`) dropped, and
/// pip-style operators kept.
fn pip_constraint(constraint: &str) -> String {
    if constraint.is_empty() {
        return String::new();
    }
    if let Some(rest) = constraint.strip_prefix('=').filter(|r| !r.starts_with('=')) {
        let version = rest.split('=').next().unwrap_or(rest).trim();
        if version.contains('*') || version.split('.').count() >= 3 {
            return format!("=={version}");
        }
        return format!("=={version}.*");
    }
    if let Some(rest) = constraint.strip_prefix("==") {
        return format!("=={}", rest.split('=').next().unwrap_or(rest).trim());
    }
    constraint.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_conda_file_becomes_pip_pins() {
        let text = "name: model-env\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.12\n  - numpy=2.3.1\n  - pip=25.1.1\n  - scikit-learn=1.7.0\n  - conda-forge::scipy=1.16\n  - pip:\n    - azureml-inference-server-http==1.4.1\n    - inference-schema[numpy-support]\n    - joblib\n";
        let b = parse_conda(text, "conda.yaml").unwrap();
        assert_eq!(b.python_version.as_deref(), Some("3.12"));
        assert_eq!(
            b.requirements,
            [
                "numpy==2.3.1",
                "scikit-learn==1.7.0",
                "scipy==1.16.*",
                "azureml-inference-server-http==1.4.1",
                "inference-schema[numpy-support]",
                "joblib"
            ]
        );
        assert!(parse_conda("dependencies: 3\n", "c").unwrap_err().message.contains("must be a list"));
        assert!(parse_conda("dependencies:\n  - {conda: [x]}\n", "c").is_err());
    }

    #[test]
    fn azure_references_say_what_to_write_and_curated_sklearn_maps() {
        let e = environment_of(Some(&Value::String("azureml:my-env:1".into()))).unwrap_err();
        assert!(e.message.contains("conda_file"), "{e}");
        let c = environment_of(Some(&Value::String(
            "azureml://registries/azureml/environments/sklearn-1.5/labels/latest".into(),
        )))
        .unwrap();
        let PythonEnvironment::Build(b) = c else { panic!("{c:?}") };
        assert_eq!(b.requirements[0], "scikit-learn==1.5.*");
    }
}
