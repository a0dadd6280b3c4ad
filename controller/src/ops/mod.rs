//! Operations as types: what the admin API, the CLI and the awsJson
//! endpoint (`crate::aws`, which translates CodePipeline's shapes to these)
//! can ask of the controller, and what they get back.
//!
//! Each operation is a request struct and a response struct (serde,
//! camelCase, in CodePipeline's shapes where CodePipeline has the
//! operation), named after CodePipeline's operation where one exists and
//! after Sluice's own verb otherwise. The [`operations!`] table below is the
//! one place that says how an operation travels: from it come the REST
//! routes (`api.rs` serves them with one generic handler), the [`Request`]
//! and [`Response`] enums the driver dispatches on, the [`Handle`] trait
//! the driver implements once per operation, and the client's
//! [`Client::call`]. Errors are one enum, [`OpError`], which knows its HTTP
//! status, CLI exit code and AWS error type.
//!
//! Knows nothing of the driver, the store or the engine's state: the types
//! here are the wire's.
//!
//! # Adding an operation
//!
//! 1. The request/response pair, in the noun's file (here `pipelines.rs`):
//!
//!    ```ignore
//!    /// DeletePipeline: every version, execution and log of a pipeline.
//!    #[derive(Debug, Clone, Serialize, Deserialize)]
//!    #[serde(rename_all = "camelCase", deny_unknown_fields)]
//!    pub struct DeletePipeline {
//!        pub name: String,
//!    }
//!
//!    #[derive(Debug, Clone, Serialize, Deserialize)]
//!    pub struct DeletePipelineOutput {
//!        pub name: String,
//!        pub deleted: bool,
//!    }
//!    ```
//!
//! 2. One line of the table below: the method and path (`{field}` is
//!    filled from the request's field of that name; the other fields are
//!    the JSON body, or the query string when listed after `query`) and the
//!    permission:
//!
//!    ```ignore
//!    DeletePipeline -> DeletePipelineOutput: DELETE "/pipelines/{name}", "codepipeline:DeletePipeline";
//!    ```
//!
//! 3. The driver's handler (the compiler asks for it):
//!
//!    ```ignore
//!    impl Handle<DeletePipeline> for Driver {
//!        fn handle(&mut self, op: DeletePipeline, ctx: &Context) -> Result<DeletePipelineOutput, OpError> { ... }
//!    }
//!    ```
//!
//! 4. The CLI's line: `client.call(DeletePipeline { name }).await?`.
//!
//! Who may call it follows from the permission ([`authorize`]).

mod access_keys;
mod agents;
// The audit log (issue 15, gov).
mod audit;
mod client;
mod error;
mod executions;
mod jobs;
pub mod paging;
mod pipelines;
mod plugins;
mod publishers;
mod secrets;
mod stages;
mod tags;
mod users;
mod webhooks;

pub use access_keys::*;
pub use agents::*;
pub use audit::*;
pub use client::{Client, SIGNATURE_HEADER};
pub use error::OpError;
pub use executions::*;
pub use jobs::*;
pub use pipelines::*;
pub use plugins::*;
pub use publishers::*;
pub use secrets::*;
pub use stages::*;
pub use tags::*;
pub use users::*;
pub use webhooks::*;

use crate::auth::Caller;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Something the driver can be asked to do, whatever the transport.
pub trait Operation: Sized + Send + 'static {
    /// The operation's name: CodePipeline's, or Sluice's own verb.
    const NAME: &'static str;
    /// The IAM-style action a caller needs (`codepipeline:StartPipelineExecution`,
    /// `sluice:CreateAgentToken`); [`authorize`] decides on it.
    const PERMISSION: &'static str;
    type Output: Serialize + DeserializeOwned + Send + 'static;

    fn into_request(self) -> Request;

    /// This operation's output, if `response` is one.
    fn output_of(response: Response) -> Option<Self::Output>;
}

/// How an operation travels over REST: every field named in [`PATH`](Route::PATH)
/// as `{field}` is a path segment, those in [`QUERY`](Route::QUERY) are query
/// parameters, and the rest is the JSON body (or, with
/// [`TEXT_BODY`](Route::TEXT_BODY), the one string field that is the whole body).
pub trait Route: Operation + Serialize + DeserializeOwned {
    const METHOD: reqwest::Method;
    /// Below `/v1`, in axum's syntax.
    const PATH: &'static str;
    const QUERY: &'static [&'static str];
    /// The field that is the raw (UTF-8) body, and what the body is, for
    /// the error when it is not UTF-8.
    const TEXT_BODY: Option<(&'static str, &'static str)>;
}

/// Something that is handed every route's operation type: the REST router
/// registers one generic handler per operation with it.
pub trait Registrar<R> {
    fn register<O: Route>(&mut self, router: R) -> R;
}

/// What a handler knows besides the request.
#[derive(Debug, Clone)]
pub struct Context {
    pub caller: Caller,
    /// Milliseconds since the epoch, read once for the driver's step.
    pub now: u64,
}

/// The driver's handler of one operation.
pub trait Handle<O: Operation> {
    fn handle(&mut self, op: O, ctx: &Context) -> Result<O::Output, OpError>;
}

/// Operations only the admin role may call, and what the refusal says the
/// caller may not do. Every other operation is open to every
/// authenticated caller (admin and operator).
const ADMIN_ONLY: &[(&str, &str)] = &[
    ("sluice:CreateUser", "manage users and tokens"),
    ("sluice:CreateApiToken", "manage users and tokens"),
    ("sluice:ListApiTokens", "manage users and tokens"),
    ("sluice:RevokeApiToken", "manage users and tokens"),
    // Who may enroll hosts, and which hosts a label like `env=prod` sends
    // work (and its secrets) to, is the admin's decision: an operator who
    // could label a shared host, or mint a token letting hosts claim a
    // label, could route another team's jobs onto a host they control.
    ("sluice:CreateAgentToken", "manage join tokens or agent labels"),
    ("sluice:RevokeAgentToken", "manage join tokens or agent labels"),
    ("sluice:LabelAgent", "manage join tokens or agent labels"),
    // Whom the controller trusts to sign plugins is the admin's decision.
    ("sluice:AddPublisher", "manage trusted publishers"),
    ("sluice:RemovePublisher", "manage trusted publishers"),
    // Access keys for the AWS-compatible API are credentials, as API tokens are.
    ("sluice:CreateAccessKey", "manage users and tokens"),
    ("sluice:ListAccessKeys", "manage users and tokens"),
    ("sluice:RevokeAccessKey", "manage users and tokens"),
    // The audit log (issue 15, gov): who did what is the security
    // officer's to read, as CloudTrail is; operators are among the audited.
    ("sluice:ListAuditRecords", "read the audit log"),
    ("sluice:VerifyAudit", "read the audit log"),
];

/// Whether `caller` may use `permission`: the one role rule.
pub fn authorize(caller: &Caller, permission: &str) -> Result<(), OpError> {
    match ADMIN_ONLY.iter().find(|(p, _)| *p == permission) {
        Some((_, what)) if !caller.is_admin() => {
            Err(OpError::AccessDenied(format!("{} may not {what}: that needs the admin role", caller.user)))
        }
        _ => Ok(()),
    }
}

/// Query parameters arrive as text: a number field of a request read from
/// the query string accepts both.
pub(crate) mod query_number {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Number(T),
        Text(String),
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: std::str::FromStr + Deserialize<'de>,
    {
        match Option::<Either<T>>::deserialize(d)? {
            None => Ok(None),
            Some(Either::Number(n)) => Ok(Some(n)),
            Some(Either::Text(t)) => {
                t.parse().map(Some).map_err(|_| serde::de::Error::custom(format!("{t:?} is not a number")))
            }
        }
    }
}

macro_rules! text_body {
    () => {
        None
    };
    ($field:literal $what:literal) => {
        Some(($field, $what))
    };
}

/// The route table: every operation, how it travels, what it needs.
/// `routes` are served by the generic REST handler; `internal` ones have a
/// transport of their own (a binary body, a signed webhook) and reach the
/// driver the same way.
macro_rules! operations {
    (
        routes {
            $( $op:ident -> $out:ty : $method:ident $path:literal
               $( query [ $($q:literal),* ] )?
               $( text $tf:literal $tw:literal )?
               , $perm:literal ; )*
        }
        internal {
            $( $iop:ident -> $iout:ty , $iperm:literal ; )*
        }
    ) => {
        /// Every operation, as the driver receives it.
        #[derive(Debug)]
        pub enum Request {
            $( $op($op), )*
            $( $iop($iop), )*
        }

        /// Every operation's output, as the driver answers.
        #[derive(Debug)]
        pub enum Response {
            $( $op($out), )*
            $( $iop($iout), )*
        }

        impl Request {
            pub fn name(&self) -> &'static str {
                match self {
                    $( Request::$op(_) => <$op as Operation>::NAME, )*
                    $( Request::$iop(_) => <$iop as Operation>::NAME, )*
                }
            }

            pub fn permission(&self) -> &'static str {
                match self {
                    $( Request::$op(_) => <$op as Operation>::PERMISSION, )*
                    $( Request::$iop(_) => <$iop as Operation>::PERMISSION, )*
                }
            }

            /// The one dispatch: each operation to its handler.
            pub fn dispatch<H: Handler>(self, handler: &mut H, ctx: &Context) -> Result<Response, OpError> {
                match self {
                    $( Request::$op(op) => Handle::<$op>::handle(handler, op, ctx).map(Response::$op), )*
                    $( Request::$iop(op) => Handle::<$iop>::handle(handler, op, ctx).map(Response::$iop), )*
                }
            }
        }

        /// A driver: a handler for every operation.
        pub trait Handler: $( Handle<$op> + )* $( Handle<$iop> + )* {}
        impl<T: $( Handle<$op> + )* $( Handle<$iop> + )*> Handler for T {}

        $(
            impl Operation for $op {
                const NAME: &'static str = stringify!($op);
                const PERMISSION: &'static str = $perm;
                type Output = $out;

                fn into_request(self) -> Request {
                    Request::$op(self)
                }

                fn output_of(response: Response) -> Option<$out> {
                    match response {
                        Response::$op(output) => Some(output),
                        _ => None,
                    }
                }
            }

            impl Route for $op {
                const METHOD: reqwest::Method = reqwest::Method::$method;
                const PATH: &'static str = $path;
                const QUERY: &'static [&'static str] = &[ $( $($q),* )? ];
                const TEXT_BODY: Option<(&'static str, &'static str)> = text_body!($( $tf $tw )?);
            }
        )*

        $(
            impl Operation for $iop {
                const NAME: &'static str = stringify!($iop);
                const PERMISSION: &'static str = $iperm;
                type Output = $iout;

                fn into_request(self) -> Request {
                    Request::$iop(self)
                }

                fn output_of(response: Response) -> Option<$iout> {
                    match response {
                        Response::$iop(output) => Some(output),
                        _ => None,
                    }
                }
            }
        )*

        /// Hands every route's operation type to `registrar`, in table order.
        pub fn for_each_route<R>(router: R, registrar: &mut impl Registrar<R>) -> R {
            $( let router = registrar.register::<$op>(router); )*
            router
        }

        /// Every route's method, path and operation name (for docs and tests).
        pub const ROUTES: &[(&str, &str, &str)] = &[
            $( (stringify!($method), $path, stringify!($op)), )*
        ];
    };
}

operations! {
    routes {
        // Pipelines.
        CreatePipeline -> CreatePipelineOutput: POST "/pipelines" text "pipelineDeclaration" "pipeline declaration", "codepipeline:CreatePipeline";
        ListPipelines -> ListPipelinesOutput: GET "/pipelines" query ["maxResults", "nextToken"], "codepipeline:ListPipelines";
        GetPipeline -> GetPipelineOutput: GET "/pipelines/{name}" query ["version"], "codepipeline:GetPipeline";
        UpdatePipeline -> UpdatePipelineOutput: PUT "/pipelines/{name}" text "pipelineDeclaration" "pipeline declaration", "codepipeline:UpdatePipeline";
        DeletePipeline -> DeletePipelineOutput: DELETE "/pipelines/{name}", "codepipeline:DeletePipeline";
        ValidatePipeline -> ValidatePipelineOutput: POST "/validate-pipeline" text "pipelineDeclaration" "pipeline declaration", "sluice:ValidatePipeline";
        GetPipelineState -> GetPipelineStateOutput: GET "/pipelines/{name}/state", "codepipeline:GetPipelineState";
        // Executions.
        StartPipelineExecution -> StartPipelineExecutionOutput: POST "/pipelines/{name}/executions", "codepipeline:StartPipelineExecution";
        ListPipelineExecutions -> ListPipelineExecutionsOutput: GET "/pipelines/{pipelineName}/executions" query ["maxResults", "nextToken"], "codepipeline:ListPipelineExecutions";
        GetPipelineExecution -> GetPipelineExecutionOutput: GET "/pipelines/{pipelineName}/executions/{pipelineExecutionId}", "codepipeline:GetPipelineExecution";
        GetExecutionLogs -> GetExecutionLogsOutput: GET "/pipelines/{pipelineName}/executions/{pipelineExecutionId}/logs", "sluice:GetExecutionLogs";
        StopPipelineExecution -> StopPipelineExecutionOutput: POST "/pipelines/{pipelineName}/executions/{pipelineExecutionId}/stop", "codepipeline:StopPipelineExecution";
        // Stages, transitions and approvals.
        RetryStageExecution -> RetryStageExecutionOutput: POST "/pipelines/{pipelineName}/stages/{stageName}/retry", "codepipeline:RetryStageExecution";
        RollbackStage -> RollbackStageOutput: POST "/pipelines/{pipelineName}/stages/{stageName}/rollback", "codepipeline:RollbackStage";
        DisableStageTransition -> StageTransitionOutput: POST "/pipelines/{pipelineName}/stages/{stageName}/transition/disable", "codepipeline:DisableStageTransition";
        EnableStageTransition -> StageTransitionOutput: POST "/pipelines/{pipelineName}/stages/{stageName}/transition/enable", "codepipeline:EnableStageTransition";
        PutApprovalResult -> PutApprovalResultOutput: POST "/pipelines/{pipelineName}/stages/{stageName}/actions/{actionName}/approval", "codepipeline:PutApprovalResult";
        // Webhooks.
        PutWebhook -> PutWebhookOutput: POST "/pipelines/{pipelineName}/webhook", "codepipeline:PutWebhook";
        DeleteWebhook -> DeleteWebhookOutput: DELETE "/pipelines/{pipelineName}/webhook", "codepipeline:DeleteWebhook";
        ListWebhooks -> ListWebhooksOutput: GET "/webhooks" query ["maxResults", "nextToken"], "codepipeline:ListWebhooks";
        // Agents and their join tokens.
        ListAgents -> ListAgentsOutput: GET "/agents", "sluice:ListAgents";
        LabelAgent -> LabelAgentOutput: POST "/agents/{id}/labels", "sluice:LabelAgent";
        EnableAgent -> AgentStateOutput: POST "/agents/{id}/enable", "sluice:ManageAgents";
        DrainAgent -> AgentStateOutput: POST "/agents/{id}/drain", "sluice:ManageAgents";
        DisableAgent -> AgentStateOutput: POST "/agents/{id}/disable", "sluice:ManageAgents";
        RevokeAgent -> AgentStateOutput: POST "/agents/{id}/revoke", "sluice:ManageAgents";
        CreateAgentToken -> CreateAgentTokenOutput: POST "/agent-tokens", "sluice:CreateAgentToken";
        ListAgentTokens -> ListAgentTokensOutput: GET "/agent-tokens", "sluice:ListAgentTokens";
        RevokeAgentToken -> RevokeAgentTokenOutput: POST "/agent-tokens/{id}/revoke", "sluice:RevokeAgentToken";
        // Plugins and their publishers.
        ListPlugins -> ListPluginsOutput: GET "/plugins", "sluice:ListPlugins";
        DescribePlugin -> PluginView: GET "/plugins/{key}", "sluice:DescribePlugin";
        DeletePlugin -> DeletePluginOutput: DELETE "/plugins/{key}", "sluice:DeletePlugin";
        ListPublishers -> ListPublishersOutput: GET "/publishers", "sluice:ListPublishers";
        AddPublisher -> PublisherView: POST "/publishers", "sluice:AddPublisher";
        RemovePublisher -> RemovePublisherOutput: DELETE "/publishers/{name}", "sluice:RemovePublisher";
        // Secrets.
        SetSecret -> SetSecretOutput: PUT "/secrets/{name}", "sluice:SetSecret";
        ListSecrets -> ListSecretsOutput: GET "/secrets", "sluice:ListSecrets";
        DeleteSecret -> DeleteSecretOutput: DELETE "/secrets/{name}", "sluice:DeleteSecret";
        // Users and their API tokens.
        CreateUser -> CreateUserOutput: POST "/users", "sluice:CreateUser";
        ListUsers -> ListUsersOutput: GET "/users", "sluice:ListUsers";
        CreateApiToken -> CreateApiTokenOutput: POST "/tokens", "sluice:CreateApiToken";
        ListApiTokens -> ListApiTokensOutput: GET "/tokens", "sluice:ListApiTokens";
        RevokeApiToken -> RevokeApiTokenOutput: POST "/tokens/{id}/revoke", "sluice:RevokeApiToken";
        // Custom action types and job workers.
        CreateCustomActionType -> CreateCustomActionTypeOutput: POST "/custom-action-types", "codepipeline:CreateCustomActionType";
        DeleteCustomActionType -> EmptyOutput: DELETE "/custom-action-types/{category}/{provider}/{version}", "codepipeline:DeleteCustomActionType";
        ListActionTypes -> ListActionTypesOutput: GET "/action-types" query ["actionOwnerFilter", "nextToken", "regionFilter"], "codepipeline:ListActionTypes";
        GetActionType -> GetActionTypeOutput: GET "/action-types/{category}/{owner}/{provider}/{version}", "codepipeline:GetActionType";
        PollForJobs -> PollForJobsOutput: POST "/jobs/poll", "codepipeline:PollForJobs";
        AcknowledgeJob -> AcknowledgeJobOutput: POST "/jobs/{jobId}/acknowledge", "codepipeline:AcknowledgeJob";
        GetJobDetails -> GetJobDetailsOutput: GET "/jobs/{jobId}", "codepipeline:GetJobDetails";
        PutJobSuccessResult -> EmptyOutput: POST "/jobs/{jobId}/success", "codepipeline:PutJobSuccessResult";
        PutJobFailureResult -> EmptyOutput: POST "/jobs/{jobId}/failure", "codepipeline:PutJobFailureResult";
        // Access keys for the AWS-compatible API (issue 14, aws).
        CreateAccessKey -> CreateAccessKeyOutput: POST "/access-keys", "sluice:CreateAccessKey";
        ListAccessKeys -> ListAccessKeysOutput: GET "/access-keys", "sluice:ListAccessKeys";
        RevokeAccessKey -> RevokeAccessKeyOutput: POST "/access-keys/{id}/revoke", "sluice:RevokeAccessKey";
        // Tags and action executions (issue 14, aws).
        TagResource -> TagResourceOutput: POST "/tags", "codepipeline:TagResource";
        UntagResource -> UntagResourceOutput: POST "/tags/remove", "codepipeline:UntagResource";
        ListTagsForResource -> ListTagsForResourceOutput: GET "/tags" query ["resourceArn", "maxResults", "nextToken"], "codepipeline:ListTagsForResource";
        ListActionExecutions -> ListActionExecutionsOutput: GET "/pipelines/{pipelineName}/action-executions" query ["pipelineExecutionId", "maxResults", "nextToken"], "codepipeline:ListActionExecutions";
        // The audit log (issue 15, gov).
        ListAuditRecords -> ListAuditRecordsOutput: GET "/audit" query ["since", "until", "user", "pipeline", "operation", "limit"], "sluice:ListAuditRecords";
        VerifyAudit -> VerifyAuditOutput: POST "/audit/verify", "sluice:VerifyAudit";
    }
    internal {
        // A binary body with a signature header; described before the driver sees it.
        PushPlugin -> PushPluginOutput, "sluice:PushPlugin";
        // Asked by `PushPlugin`'s transport before any of the component's code runs.
        VetPluginSignature -> (), "sluice:PushPlugin";
        // Authenticated by the signature of its raw body, not by a token.
        DeliverWebhook -> DeliverWebhookOutput, "sluice:DeliverWebhook";
        // Asked by the S3 subset for a job's temporary credentials (SigV4 with them).
        JobCredentials -> JobCredentialsOutput, "s3:GetObject";
        RecordJobOutput -> EmptyOutput, "s3:PutObject";
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn the_role_rule_follows_the_permission() {
        let admin = Caller::new("admin", Role::Admin);
        let ann = Caller::new("ann", Role::Operator);
        for permission in [
            CreateUser::PERMISSION,
            CreateApiToken::PERMISSION,
            ListApiTokens::PERMISSION,
            RevokeApiToken::PERMISSION,
            CreateAgentToken::PERMISSION,
            RevokeAgentToken::PERMISSION,
            LabelAgent::PERMISSION,
            AddPublisher::PERMISSION,
            RemovePublisher::PERMISSION,
            CreateAccessKey::PERMISSION,
            ListAccessKeys::PERMISSION,
            RevokeAccessKey::PERMISSION,
        ] {
            assert!(authorize(&admin, permission).is_ok(), "{permission}");
            let refused = authorize(&ann, permission).unwrap_err();
            assert!(matches!(refused, OpError::AccessDenied(_)), "{permission}");
            assert!(refused.to_string().starts_with("ann may not manage "), "{refused}");
        }
        // Everything else is any authenticated caller's, as before.
        for permission in [
            StartPipelineExecution::PERMISSION,
            PutApprovalResult::PERMISSION,
            ListUsers::PERMISSION,
            ListAgentTokens::PERMISSION,
            RevokeAgent::PERMISSION,
            PushPlugin::PERMISSION,
            SetSecret::PERMISSION,
            DeletePipeline::PERMISSION,
        ] {
            assert!(authorize(&ann, permission).is_ok(), "{permission}");
        }
        // Every admin-only permission names an operation that exists.
        for (permission, _) in ADMIN_ONLY {
            assert!(ROUTES.iter().any(|(_, _, op)| permission.ends_with(op)), "{permission}");
        }
    }

    #[test]
    fn every_route_is_unique_and_named_after_its_operation() {
        let mut seen = std::collections::HashSet::new();
        for (method, path, op) in ROUTES {
            assert!(seen.insert((method, path)), "{method} {path} twice");
            assert!(path.starts_with('/'), "{op}: {path}");
        }
        assert_eq!(StartPipelineExecution::NAME, "StartPipelineExecution");
        assert_eq!(StartPipelineExecution::PERMISSION, "codepipeline:StartPipelineExecution");
    }
}
