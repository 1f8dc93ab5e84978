//! `wharf.services.check.v1.Check`: wharf's own consistency check (see [`crate::check`]).
//! Whole-daemon, so no namespace header is needed.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wharf_api::check::check_server::Check;
use wharf_api::check::{CheckRequest, CheckResponse, Finding};

use crate::check::{self, Options, Repair};
use crate::server::Daemon;

pub struct CheckService(pub Arc<Daemon>);

#[tonic::async_trait]
impl Check for CheckService {
    async fn check(&self, req: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let req = req.into_inner();
        let opts = Options {
            deep: req.deep,
            repair: if req.repair {
                Repair::All
            } else {
                Repair::None
            },
            startup: false,
        };
        let report = check::run(&self.0, opts)
            .await
            .map_err(|e| Status::internal(format!("check: {e:#}")))?;
        for f in report.findings.iter().filter(|f| f.repaired) {
            tracing::info!(kind = f.kind.as_str(), subject = %f.subject, "check: repaired");
        }
        Ok(Response::new(CheckResponse {
            findings: report
                .findings
                .into_iter()
                .map(|f| Finding {
                    kind: f.kind.as_str().to_string(),
                    subject: f.subject,
                    detail: f.detail,
                    repaired: f.repaired,
                })
                .collect(),
            checked: report
                .checked
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }))
    }
}
