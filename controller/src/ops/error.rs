//! The one error of every operation, with what each transport makes of
//! it: the HTTP status, the CLI's exit code (0 success, 1 the operation
//! failed, 2 bad usage or invalid input, 3 not permitted) and the AWS error
//! type that the API's `error.code` carries.

use serde::{Deserialize, Serialize};

/// Why an operation failed. Callers branch on the variant; the message is
/// for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The request or a declaration is invalid; `diagnostics` lists every
    /// problem (with its JSON path, for declarations).
    #[error("{message}")]
    Validation { message: String, diagnostics: Vec<String> },
    #[error("{0}")]
    PipelineNotFound(String),
    #[error("{0}")]
    PipelineVersionNotFound(String),
    #[error("{0}")]
    ExecutionNotFound(String),
    #[error("{0}")]
    StageNotFound(String),
    /// Another resource (agent, plugin, token, secret, user, publisher,
    /// webhook, approval waiting at an action) does not exist.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PipelineNameInUse(String),
    /// The approval was already decided (by this caller, or it ended).
    #[error("{0}")]
    ApprovalAlreadyCompleted(String),
    /// The execution named for an approval is not one waiting for it.
    #[error("{0}")]
    InvalidApprovalToken(String),
    /// The operation does not fit the resource's state (still running,
    /// already ended, in use, built in, ...).
    #[error("{0}")]
    Conflict(String),
    /// Bad or missing credentials (a bearer token, a webhook signature).
    #[error("{0}")]
    Unauthorized(String),
    /// A known caller whose role does not allow the operation.
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    Internal(String),
    /// A job worker named a job that does not exist.
    #[error("{0}")]
    JobNotFound(String),
    /// A job was acknowledged with a nonce other than its poll's.
    #[error("{0}")]
    InvalidNonce(String),
    /// A job already ended (succeeded, failed, timed out, or its execution
    /// stopped), or not yet polled.
    #[error("{0}")]
    InvalidJobState(String),
    #[error("{0}")]
    ActionTypeNotFound(String),
    /// The client could not reach the controller, or got no answer it
    /// understands.
    #[error("{0}")]
    Unavailable(String),
    // AWS-compatible API (issue 14, aws).
    /// Another change to the same resource got there first.
    #[error("{0}")]
    ConcurrentModification(String),
    /// A CodePipeline operation Sluice does not implement.
    #[error("{0}")]
    UnsupportedOperation(String),
    /// An `X-Amz-Target` that names no CodePipeline operation.
    #[error("{0}")]
    UnknownOperation(String),
    /// A `nextToken` this listing did not hand out.
    #[error("{0}")]
    InvalidNextToken(String),
    /// A resource ARN that is malformed or names no Sluice resource kind.
    #[error("{0}")]
    InvalidArn(String),
    #[error("{0}")]
    InvalidTags(String),
    #[error("{0}")]
    TooManyTags(String),
    /// StopPipelineExecution of an execution that has already ended.
    #[error("{0}")]
    PipelineExecutionNotStoppable(String),
}

/// The JSON body of an error: `{"error": {"code", "message", "diagnostics"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub diagnostics: Vec<String>,
}

impl OpError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Validation { message: message.into(), diagnostics: Vec::new() }
    }

    /// The HTTP status the admin API answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Validation { .. } => 400,
            Self::Unauthorized(_) => 401,
            Self::AccessDenied(_) => 403,
            Self::PipelineNotFound(_)
            | Self::PipelineVersionNotFound(_)
            | Self::ExecutionNotFound(_)
            | Self::StageNotFound(_)
            | Self::NotFound(_)
            | Self::JobNotFound(_)
            | Self::ActionTypeNotFound(_) => 404,
            Self::PipelineNameInUse(_)
            | Self::ApprovalAlreadyCompleted(_)
            | Self::InvalidApprovalToken(_)
            | Self::Conflict(_)
            | Self::InvalidNonce(_)
            | Self::InvalidJobState(_) => 409,
            Self::Internal(_) => 500,
            Self::Unavailable(_) => 503,
            Self::ConcurrentModification(_) | Self::PipelineExecutionNotStoppable(_) => 409,
            Self::UnsupportedOperation(_)
            | Self::UnknownOperation(_)
            | Self::InvalidNextToken(_)
            | Self::InvalidArn(_)
            | Self::InvalidTags(_)
            | Self::TooManyTags(_) => 400,
        }
    }

    /// The exit code of the CLI command that met this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Validation { .. }
            | Self::UnknownOperation(_)
            | Self::InvalidNextToken(_)
            | Self::InvalidArn(_)
            | Self::InvalidTags(_)
            | Self::TooManyTags(_) => 2,
            Self::Unauthorized(_) | Self::AccessDenied(_) => 3,
            _ => 1,
        }
    }

    /// The AWS error type (`__type` in awsJson, `error.code` in the admin API).
    pub fn aws_type(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "ValidationException",
            Self::PipelineNotFound(_) => "PipelineNotFoundException",
            Self::PipelineVersionNotFound(_) => "PipelineVersionNotFoundException",
            Self::ExecutionNotFound(_) => "PipelineExecutionNotFoundException",
            Self::StageNotFound(_) => "StageNotFoundException",
            Self::NotFound(_) => "ResourceNotFoundException",
            Self::PipelineNameInUse(_) => "PipelineNameInUseException",
            Self::ApprovalAlreadyCompleted(_) => "ApprovalAlreadyCompletedException",
            Self::InvalidApprovalToken(_) => "InvalidApprovalTokenException",
            Self::Conflict(_) => "ConflictException",
            Self::Unauthorized(_) => "UnauthorizedException",
            Self::AccessDenied(_) => "AccessDeniedException",
            Self::Internal(_) => "InternalError",
            Self::Unavailable(_) => "ServiceUnavailableException",
            Self::JobNotFound(_) => "JobNotFoundException",
            Self::InvalidNonce(_) => "InvalidNonceException",
            Self::InvalidJobState(_) => "InvalidJobStateException",
            Self::ActionTypeNotFound(_) => "ActionTypeNotFoundException",
            Self::ConcurrentModification(_) => "ConcurrentModificationException",
            Self::UnsupportedOperation(_) => "UnsupportedOperationException",
            Self::UnknownOperation(_) => "UnknownOperationException",
            Self::InvalidNextToken(_) => "InvalidNextTokenException",
            Self::InvalidArn(_) => "InvalidArnException",
            Self::InvalidTags(_) => "InvalidTagsException",
            Self::TooManyTags(_) => "TooManyTagsException",
            Self::PipelineExecutionNotStoppable(_) => "PipelineExecutionNotStoppableException",
        }
    }

    pub fn diagnostics(&self) -> &[String] {
        match self {
            Self::Validation { diagnostics, .. } => diagnostics,
            _ => &[],
        }
    }

    /// The message with every diagnostic on a line of its own, indented:
    /// what the CLI prints.
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        for d in self.diagnostics() {
            text.push_str("\n  ");
            text.push_str(d);
        }
        text
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.aws_type().to_string(),
                message: self.to_string(),
                diagnostics: self.diagnostics().to_vec(),
            },
        }
    }

    /// The error an API answer carries: by its AWS type, or by the status
    /// when the type is one this client does not know.
    pub fn from_wire(status: u16, body: Option<ErrorDetail>) -> Self {
        let (code, message, diagnostics) = match body {
            Some(d) => (d.code, d.message, d.diagnostics),
            None => (String::new(), format!("request failed with status {status}"), Vec::new()),
        };
        let known = [
            Self::PipelineNotFound(String::new()),
            Self::PipelineVersionNotFound(String::new()),
            Self::ExecutionNotFound(String::new()),
            Self::StageNotFound(String::new()),
            Self::NotFound(String::new()),
            Self::PipelineNameInUse(String::new()),
            Self::ApprovalAlreadyCompleted(String::new()),
            Self::InvalidApprovalToken(String::new()),
            Self::Conflict(String::new()),
            Self::Unauthorized(String::new()),
            Self::AccessDenied(String::new()),
            Self::Internal(String::new()),
            Self::Unavailable(String::new()),
            Self::JobNotFound(String::new()),
            Self::InvalidNonce(String::new()),
            Self::InvalidJobState(String::new()),
            Self::ActionTypeNotFound(String::new()),
            Self::ConcurrentModification(String::new()),
            Self::UnsupportedOperation(String::new()),
            Self::UnknownOperation(String::new()),
            Self::InvalidNextToken(String::new()),
            Self::InvalidArn(String::new()),
            Self::InvalidTags(String::new()),
            Self::TooManyTags(String::new()),
            Self::PipelineExecutionNotStoppable(String::new()),
        ];
        if code == "ValidationException" || (status == 400 && !known.iter().any(|k| k.aws_type() == code)) {
            return Self::Validation { message, diagnostics };
        }
        let by_code = known.into_iter().find(|k| k.aws_type() == code);
        let by_status = || match status {
            401 => Self::Unauthorized(String::new()),
            403 => Self::AccessDenied(String::new()),
            404 => Self::NotFound(String::new()),
            409 => Self::Conflict(String::new()),
            503 => Self::Unavailable(String::new()),
            _ => Self::Internal(String::new()),
        };
        by_code.unwrap_or_else(by_status).with_message(message)
    }

    fn with_message(self, message: String) -> Self {
        match self {
            Self::Validation { diagnostics, .. } => Self::Validation { message, diagnostics },
            Self::PipelineNotFound(_) => Self::PipelineNotFound(message),
            Self::PipelineVersionNotFound(_) => Self::PipelineVersionNotFound(message),
            Self::ExecutionNotFound(_) => Self::ExecutionNotFound(message),
            Self::StageNotFound(_) => Self::StageNotFound(message),
            Self::NotFound(_) => Self::NotFound(message),
            Self::PipelineNameInUse(_) => Self::PipelineNameInUse(message),
            Self::ApprovalAlreadyCompleted(_) => Self::ApprovalAlreadyCompleted(message),
            Self::InvalidApprovalToken(_) => Self::InvalidApprovalToken(message),
            Self::Conflict(_) => Self::Conflict(message),
            Self::Unauthorized(_) => Self::Unauthorized(message),
            Self::AccessDenied(_) => Self::AccessDenied(message),
            Self::Internal(_) => Self::Internal(message),
            Self::Unavailable(_) => Self::Unavailable(message),
            Self::JobNotFound(_) => Self::JobNotFound(message),
            Self::InvalidNonce(_) => Self::InvalidNonce(message),
            Self::InvalidJobState(_) => Self::InvalidJobState(message),
            Self::ActionTypeNotFound(_) => Self::ActionTypeNotFound(message),
            Self::ConcurrentModification(_) => Self::ConcurrentModification(message),
            Self::UnsupportedOperation(_) => Self::UnsupportedOperation(message),
            Self::UnknownOperation(_) => Self::UnknownOperation(message),
            Self::InvalidNextToken(_) => Self::InvalidNextToken(message),
            Self::InvalidArn(_) => Self::InvalidArn(message),
            Self::InvalidTags(_) => Self::InvalidTags(message),
            Self::TooManyTags(_) => Self::TooManyTags(message),
            Self::PipelineExecutionNotStoppable(_) => Self::PipelineExecutionNotStoppable(message),
        }
    }
}

impl From<anyhow::Error> for OpError {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(format!("{e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each variant's HTTP status, exit code and AWS type, and that the
    /// client reads back the variant the server sent.
    #[test]
    fn every_variant_maps_to_its_status_exit_code_and_aws_type() {
        let m = || "m".to_string();
        let cases = [
            (OpError::Validation { message: m(), diagnostics: vec!["$.pipeline: x".into()] }, 400, 2, "ValidationException"),
            (OpError::PipelineNotFound(m()), 404, 1, "PipelineNotFoundException"),
            (OpError::PipelineVersionNotFound(m()), 404, 1, "PipelineVersionNotFoundException"),
            (OpError::ExecutionNotFound(m()), 404, 1, "PipelineExecutionNotFoundException"),
            (OpError::StageNotFound(m()), 404, 1, "StageNotFoundException"),
            (OpError::NotFound(m()), 404, 1, "ResourceNotFoundException"),
            (OpError::PipelineNameInUse(m()), 409, 1, "PipelineNameInUseException"),
            (OpError::ApprovalAlreadyCompleted(m()), 409, 1, "ApprovalAlreadyCompletedException"),
            (OpError::InvalidApprovalToken(m()), 409, 1, "InvalidApprovalTokenException"),
            (OpError::Conflict(m()), 409, 1, "ConflictException"),
            (OpError::Unauthorized(m()), 401, 3, "UnauthorizedException"),
            (OpError::AccessDenied(m()), 403, 3, "AccessDeniedException"),
            (OpError::Internal(m()), 500, 1, "InternalError"),
            (OpError::Unavailable(m()), 503, 1, "ServiceUnavailableException"),
            (OpError::JobNotFound(m()), 404, 1, "JobNotFoundException"),
            (OpError::InvalidNonce(m()), 409, 1, "InvalidNonceException"),
            (OpError::InvalidJobState(m()), 409, 1, "InvalidJobStateException"),
            (OpError::ActionTypeNotFound(m()), 404, 1, "ActionTypeNotFoundException"),
            (OpError::ConcurrentModification(m()), 409, 1, "ConcurrentModificationException"),
            (OpError::UnsupportedOperation(m()), 400, 1, "UnsupportedOperationException"),
            (OpError::UnknownOperation(m()), 400, 2, "UnknownOperationException"),
            (OpError::InvalidNextToken(m()), 400, 2, "InvalidNextTokenException"),
            (OpError::InvalidArn(m()), 400, 2, "InvalidArnException"),
            (OpError::InvalidTags(m()), 400, 2, "InvalidTagsException"),
            (OpError::TooManyTags(m()), 400, 2, "TooManyTagsException"),
            (OpError::PipelineExecutionNotStoppable(m()), 409, 1, "PipelineExecutionNotStoppableException"),
        ];
        for (error, status, exit, aws) in cases {
            assert_eq!(error.status(), status, "{error:?}");
            assert_eq!(error.exit_code(), exit, "{error:?}");
            assert_eq!(error.aws_type(), aws, "{error:?}");
            let wire = serde_json::to_string(&error.body()).unwrap();
            let body: ErrorBody = serde_json::from_str(&wire).unwrap();
            assert_eq!(OpError::from_wire(status, Some(body.error)), error, "{wire}");
        }
    }

    #[test]
    fn an_unknown_error_type_falls_back_on_the_status() {
        let detail = |code: &str| ErrorDetail { code: code.into(), message: "why".into(), diagnostics: vec![] };
        assert_eq!(OpError::from_wire(404, Some(detail("NotFoundException"))), OpError::NotFound("why".into()));
        assert_eq!(OpError::from_wire(400, Some(detail("Whatever"))), OpError::invalid("why"));
        assert_eq!(OpError::from_wire(403, None).exit_code(), 3);
        assert_eq!(OpError::from_wire(502, None), OpError::Internal("request failed with status 502".into()));
        let e = OpError::Validation { message: "declaration is invalid".into(), diagnostics: vec!["a".into(), "b".into()] };
        assert_eq!(e.report(), "declaration is invalid\n  a\n  b");
    }
}
