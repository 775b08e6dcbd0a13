//! Reading a deployment's collected records back (issue 28): `GET .../deployments/{name}/collected`
//! and `online-deployment collected`.

use super::views::CollectedView;
use super::{ControlError, ControlPlane};

/// The most records one read answers.
pub(crate) const MAX_RECORDS: usize = 10_000;

impl ControlPlane {
    /// The newest records of deployment `name` (of `collection`, or all), written at or after
    /// `since` (RFC 3339), at most `limit`. Reads files: call it off the admin workers. A
    /// deployment deleted since keeps its records: its name is still read.
    pub(crate) fn collected(
        &self,
        name: &str,
        collection: Option<&str>,
        since: Option<&str>,
        limit: usize,
    ) -> Result<CollectedView, ControlError> {
        crate::spec::names::validate_name("deployment", name)?;
        if let Some(c) = collection {
            if c.is_empty() || c.len() > 64 || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
            {
                return Err(ControlError::invalid(format!(
                    "collection must be a collection name such as request, response or model_inputs, got {c:?}"
                )));
            }
        }
        let hub = self.shared.collector.get().ok_or_else(|| {
            ControlError::Unavailable("this server has no data folder (the data collector is off)".into())
        })?;
        let (known, status) = {
            let state = self.lock();
            let live = state.deployments.get(name);
            (live.is_some(), live.and_then(|d| d.live.collector().map(|c| c.view())))
        };
        let dir = hub.sink().dir();
        let folder = dir.join(&self.name).join(name);
        if !known && !folder.is_dir() {
            return Err(ControlError::NotFound(format!(
                "deployment {name:?} does not exist and has no collected records in {}",
                dir.display()
            )));
        }
        let collection = collection.map(str::to_ascii_lowercase);
        let (records, more, skipped_files) =
            crate::collector::read_records(dir, &self.name, name, collection.as_deref(), since, limit.min(MAX_RECORDS));
        Ok(CollectedView {
            deployment: name.to_string(),
            folder: folder.display().to_string(),
            collection,
            since: since.map(String::from),
            more,
            skipped_files,
            status,
            records,
        })
    }
}
