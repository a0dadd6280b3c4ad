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
//!    the JSON body, or the query string when listed after `query`), the
//!    permission and the resource:
//!
//!    ```ignore
//!    DeletePipeline -> DeletePipelineOutput: DELETE "/pipelines/{name}", "codepipeline:DeletePipeline",
//!        |o| policy::pipeline(&o.name);
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
//! Who may call it follows from the permission on the resource (the last
//! column: a function of the request), checked by the driver against the
//! caller's policies ([`crate::policy::Directory::check`]) for every call.

mod access;
mod access_keys;
mod agents;
// The audit log (issue 15, gov).
mod audit;
mod client;
pub(crate) mod error;
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
// Notifications (issue 15, notify).
mod notifications;
// Data lifecycle (issue 17, life).
mod backup;
// The revision flow and artifacts (issue 16, pages).
mod revisions;

pub use access::*;
pub use access_keys::*;
pub use agents::*;
pub use audit::*;
pub use client::{Client, SIGNATURE_HEADER, http_client, unreachable};
// Several controllers, one leader (issue 18, reach).
pub use client::{FAILOVER_BUDGET, LEADER_LOST, NO_LEADER, Replay};
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
// Notifications (issue 15, notify).
pub use notifications::*;
// Data lifecycle (issue 17, life).
pub use backup::*;
// The revision flow and artifacts (issue 16, pages).
pub use revisions::*;

use crate::auth::Caller;
use crate::policy;
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

    /// The resource this request acts on (see [`Request::resource`]).
    fn resource(&self) -> String;

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

/// Actions a policy may name that are no operation's permission: checked
/// inside operations (a pipeline granting a secret to an action needs
/// `sluice:UseSecret` on it; adding, changing or removing a manual
/// approval needs `sluice:EditApprovalAction` on it).
pub const EXTRA_ACTIONS: &[&str] = &[
    "sluice:UseSecret",
    "sluice:EditApprovalAction",
    // Metrics (issue 17, obs): reading `/metrics` on the API.
    crate::metrics::PERMISSION,
];

/// Every action a policy may name: each operation's permission and
/// [`EXTRA_ACTIONS`], once each.
pub fn actions() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = Vec::new();
    for action in PERMISSIONS.iter().map(|(_, p)| *p).chain(EXTRA_ACTIONS.iter().copied()) {
        if !all.contains(&action) {
            all.push(action);
        }
    }
    all
}

/// The permission of an operation named `name` (`StartPipelineExecution`).
pub fn permission_of(name: &str) -> Option<&'static str> {
    PERMISSIONS.iter().find(|(op, _)| *op == name).map(|(_, p)| *p)
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
               , $perm:literal , $res:expr ; )*
        }
        internal {
            $( $iop:ident -> $iout:ty , $iperm:literal , $ires:expr ; )*
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

            /// The resource the request acts on (`pipeline/web`,
            /// `pipeline/web/Deploy/Approve`, `secret/db`, `*`): what the
            /// permission is checked on.
            pub fn resource(&self) -> String {
                match self {
                    $( Request::$op(op) => op.resource(), )*
                    $( Request::$iop(op) => op.resource(), )*
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

                fn resource(&self) -> String {
                    let resource: fn(&Self) -> String = $res;
                    resource(self)
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

                fn resource(&self) -> String {
                    let resource: fn(&Self) -> String = $ires;
                    resource(self)
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

        /// Every operation's name and permission, in table order.
        pub const PERMISSIONS: &[(&str, &str)] = &[
            $( (stringify!($op), $perm), )*
            $( (stringify!($iop), $iperm), )*
        ];

        /// Every route's method, path and operation name (for docs and tests).
        pub const ROUTES: &[(&str, &str, &str)] = &[
            $( (stringify!($method), $path, stringify!($op)), )*
        ];
    };
}

operations! {
    routes {
        // Pipelines.
        CreatePipeline -> CreatePipelineOutput: POST "/pipelines" query ["team"] text "pipelineDeclaration" "pipeline declaration", "codepipeline:CreatePipeline", |o| policy::declared(&o.pipeline_declaration);
        ListPipelines -> ListPipelinesOutput: GET "/pipelines" query ["maxResults", "nextToken"], "codepipeline:ListPipelines", |_| policy::ANY.into();
        GetPipeline -> GetPipelineOutput: GET "/pipelines/{name}" query ["version"], "codepipeline:GetPipeline", |o| policy::pipeline(&o.name);
        UpdatePipeline -> UpdatePipelineOutput: PUT "/pipelines/{name}" text "pipelineDeclaration" "pipeline declaration", "codepipeline:UpdatePipeline", |o| policy::pipeline(&o.name);
        DeletePipeline -> DeletePipelineOutput: DELETE "/pipelines/{name}", "codepipeline:DeletePipeline", |o| policy::pipeline(&o.name);
        ValidatePipeline -> ValidatePipelineOutput: POST "/validate-pipeline" text "pipelineDeclaration" "pipeline declaration", "sluice:ValidatePipeline", |_| policy::ANY.into();
        GetPipelineState -> GetPipelineStateOutput: GET "/pipelines/{name}/state", "codepipeline:GetPipelineState", |o| policy::pipeline(&o.name);
        // pipe (issue 16): every pipeline's state in one read (the console's list).
        ListPipelineStates -> ListPipelineStatesOutput: GET "/pipeline-states" query ["maxResults", "nextToken"], "codepipeline:ListPipelines", |_| policy::ANY.into();
        // Executions.
        StartPipelineExecution -> StartPipelineExecutionOutput: POST "/pipelines/{name}/executions", "codepipeline:StartPipelineExecution", |o| policy::pipeline(&o.name);
        ListPipelineExecutions -> ListPipelineExecutionsOutput: GET "/pipelines/{pipelineName}/executions" query ["maxResults", "nextToken"], "codepipeline:ListPipelineExecutions", |o| policy::pipeline(&o.pipeline_name);
        GetPipelineExecution -> GetPipelineExecutionOutput: GET "/pipelines/{pipelineName}/executions/{pipelineExecutionId}", "codepipeline:GetPipelineExecution", |o| policy::pipeline(&o.pipeline_name);
        GetExecutionLogs -> GetExecutionLogsOutput: GET "/pipelines/{pipelineName}/executions/{pipelineExecutionId}/logs", "sluice:GetExecutionLogs", |o| policy::pipeline(&o.pipeline_name);
        StopPipelineExecution -> StopPipelineExecutionOutput: POST "/pipelines/{pipelineName}/executions/{pipelineExecutionId}/stop", "codepipeline:StopPipelineExecution", |o| policy::pipeline(&o.pipeline_name);
        // Stages, transitions and approvals.
        RetryStageExecution -> RetryStageExecutionOutput: POST "/pipelines/{pipelineName}/stages/{stageName}/retry", "codepipeline:RetryStageExecution", |o| policy::stage(&o.pipeline_name, &o.stage_name);
        RollbackStage -> RollbackStageOutput: POST "/pipelines/{pipelineName}/stages/{stageName}/rollback", "codepipeline:RollbackStage", |o| policy::stage(&o.pipeline_name, &o.stage_name);
        DisableStageTransition -> StageTransitionOutput: POST "/pipelines/{pipelineName}/stages/{stageName}/transition/disable", "codepipeline:DisableStageTransition", |o| policy::stage(&o.pipeline_name, &o.stage_name);
        EnableStageTransition -> StageTransitionOutput: POST "/pipelines/{pipelineName}/stages/{stageName}/transition/enable", "codepipeline:EnableStageTransition", |o| policy::stage(&o.pipeline_name, &o.stage_name);
        PutApprovalResult -> PutApprovalResultOutput: POST "/pipelines/{pipelineName}/stages/{stageName}/actions/{actionName}/approval", "codepipeline:PutApprovalResult", |o| policy::action(&o.pipeline_name, &o.stage_name, &o.action_name);
        // Webhooks.
        PutWebhook -> PutWebhookOutput: POST "/pipelines/{pipelineName}/webhook", "codepipeline:PutWebhook", |o| policy::pipeline(&o.pipeline_name);
        DeleteWebhook -> DeleteWebhookOutput: DELETE "/pipelines/{pipelineName}/webhook", "codepipeline:DeleteWebhook", |o| policy::pipeline(&o.pipeline_name);
        ListWebhooks -> ListWebhooksOutput: GET "/webhooks" query ["maxResults", "nextToken"], "codepipeline:ListWebhooks", |_| policy::ANY.into();
        // Agents and their join tokens.
        ListAgents -> ListAgentsOutput: GET "/agents", "sluice:ListAgents", |_| policy::ANY.into();
        LabelAgent -> LabelAgentOutput: POST "/agents/{id}/labels", "sluice:LabelAgent", |o| policy::named("agent", &o.id);
        EnableAgent -> AgentStateOutput: POST "/agents/{id}/enable", "sluice:ManageAgents", |o| policy::named("agent", &o.id);
        DrainAgent -> AgentStateOutput: POST "/agents/{id}/drain", "sluice:ManageAgents", |o| policy::named("agent", &o.id);
        DisableAgent -> AgentStateOutput: POST "/agents/{id}/disable", "sluice:ManageAgents", |o| policy::named("agent", &o.id);
        RevokeAgent -> AgentStateOutput: POST "/agents/{id}/revoke", "sluice:ManageAgents", |o| policy::named("agent", &o.id);
        CreateAgentToken -> CreateAgentTokenOutput: POST "/agent-tokens", "sluice:CreateAgentToken", |_| policy::named("agent", "*");
        ListAgentTokens -> ListAgentTokensOutput: GET "/agent-tokens", "sluice:ListAgentTokens", |_| policy::ANY.into();
        RevokeAgentToken -> RevokeAgentTokenOutput: POST "/agent-tokens/{id}/revoke", "sluice:RevokeAgentToken", |_| policy::named("agent", "*");
        // Plugins and their publishers.
        ListPlugins -> ListPluginsOutput: GET "/plugins", "sluice:ListPlugins", |_| policy::ANY.into();
        DescribePlugin -> PluginView: GET "/plugins/{key}", "sluice:DescribePlugin", |o| policy::named("plugin", &o.key);
        DeletePlugin -> DeletePluginOutput: DELETE "/plugins/{key}", "sluice:DeletePlugin", |o| policy::named("plugin", &o.key);
        ListPublishers -> ListPublishersOutput: GET "/publishers", "sluice:ListPublishers", |_| policy::ANY.into();
        AddPublisher -> PublisherView: POST "/publishers", "sluice:AddPublisher", |o| policy::named("publisher", &o.name);
        RemovePublisher -> RemovePublisherOutput: DELETE "/publishers/{name}", "sluice:RemovePublisher", |o| policy::named("publisher", &o.name);
        // Secrets.
        SetSecret -> SetSecretOutput: PUT "/secrets/{name}", "sluice:SetSecret", |o| policy::named("secret", &o.name);
        ListSecrets -> ListSecretsOutput: GET "/secrets", "sluice:ListSecrets", |_| policy::ANY.into();
        DeleteSecret -> DeleteSecretOutput: DELETE "/secrets/{name}", "sluice:DeleteSecret", |o| policy::named("secret", &o.name);
        // Users and their API tokens.
        CreateUser -> CreateUserOutput: POST "/users", "sluice:CreateUser", |o| policy::named("user", &o.name);
        ListUsers -> ListUsersOutput: GET "/users", "sluice:ListUsers", |_| policy::ANY.into();
        CreateApiToken -> CreateApiTokenOutput: POST "/tokens", "sluice:CreateApiToken", |o| policy::named("user", &o.user);
        ListApiTokens -> ListApiTokensOutput: GET "/tokens", "sluice:ListApiTokens", |_| policy::ANY.into();
        RevokeApiToken -> RevokeApiTokenOutput: POST "/tokens/{id}/revoke", "sluice:RevokeApiToken", |o| policy::named("token", &o.id);
        // Custom action types and job workers.
        CreateCustomActionType -> CreateCustomActionTypeOutput: POST "/custom-action-types", "codepipeline:CreateCustomActionType", |o| policy::named("actiontype", &format!("Custom/{}/{}/{}", o.category, o.provider, o.version));
        DeleteCustomActionType -> EmptyOutput: DELETE "/custom-action-types/{category}/{provider}/{version}", "codepipeline:DeleteCustomActionType", |o| policy::named("actiontype", &format!("Custom/{}/{}/{}", o.category, o.provider, o.version));
        ListActionTypes -> ListActionTypesOutput: GET "/action-types" query ["actionOwnerFilter", "nextToken", "regionFilter"], "codepipeline:ListActionTypes", |_| policy::ANY.into();
        GetActionType -> GetActionTypeOutput: GET "/action-types/{category}/{owner}/{provider}/{version}", "codepipeline:GetActionType", |o| policy::named("actiontype", &format!("{}/{}/{}/{}", o.owner, o.category, o.provider, o.version));
        PollForJobs -> PollForJobsOutput: POST "/jobs/poll", "codepipeline:PollForJobs", |o| policy::named("actiontype", &format!("{}/{}/{}/{}", o.action_type_id.owner, o.action_type_id.category, o.action_type_id.provider, o.action_type_id.version));
        AcknowledgeJob -> AcknowledgeJobOutput: POST "/jobs/{jobId}/acknowledge", "codepipeline:AcknowledgeJob", |o| policy::named("job", &o.job_id);
        GetJobDetails -> GetJobDetailsOutput: GET "/jobs/{jobId}", "codepipeline:GetJobDetails", |o| policy::named("job", &o.job_id);
        PutJobSuccessResult -> EmptyOutput: POST "/jobs/{jobId}/success", "codepipeline:PutJobSuccessResult", |o| policy::named("job", &o.job_id);
        PutJobFailureResult -> EmptyOutput: POST "/jobs/{jobId}/failure", "codepipeline:PutJobFailureResult", |o| policy::named("job", &o.job_id);
        // Access keys for the AWS-compatible API (issue 14, aws).
        CreateAccessKey -> CreateAccessKeyOutput: POST "/access-keys", "sluice:CreateAccessKey", |o| policy::named("user", &o.user);
        ListAccessKeys -> ListAccessKeysOutput: GET "/access-keys", "sluice:ListAccessKeys", |_| policy::ANY.into();
        RevokeAccessKey -> RevokeAccessKeyOutput: POST "/access-keys/{id}/revoke", "sluice:RevokeAccessKey", |o| policy::named("token", &o.id);
        // Tags and action executions (issue 14, aws).
        TagResource -> TagResourceOutput: POST "/tags", "codepipeline:TagResource", |o| policy::from_arn(&o.resource_arn);
        UntagResource -> UntagResourceOutput: POST "/tags/remove", "codepipeline:UntagResource", |o| policy::from_arn(&o.resource_arn);
        ListTagsForResource -> ListTagsForResourceOutput: GET "/tags" query ["resourceArn", "maxResults", "nextToken"], "codepipeline:ListTagsForResource", |o| policy::from_arn(&o.resource_arn);
        ListActionExecutions -> ListActionExecutionsOutput: GET "/pipelines/{pipelineName}/action-executions" query ["pipelineExecutionId", "maxResults", "nextToken"], "codepipeline:ListActionExecutions", |o| policy::pipeline(&o.pipeline_name);
        // Notifications (issue 15, notify). Rule ids (`PIPELINE:HEX`) and delivery ids
        // (`PIPELINE:N`) name their pipeline; lists of every pipeline are filtered per rule.
        CreateNotificationRule -> CreateNotificationRuleOutput: POST "/notification-rules", "codestar-notifications:CreateNotificationRule", |o| policy::pipeline(&o.pipeline_name);
        ListNotificationRules -> ListNotificationRulesOutput: GET "/notification-rules" query ["pipelineName"], "codestar-notifications:ListNotificationRules", |o| o.pipeline_name.as_deref().map_or_else(|| policy::ANY.into(), policy::pipeline);
        DeleteNotificationRule -> DeleteNotificationRuleOutput: DELETE "/notification-rules/{id}", "codestar-notifications:DeleteNotificationRule", |o| policy::pipeline(pipeline_of_id(&o.id).unwrap_or("?"));
        ListNotificationDeliveries -> ListNotificationDeliveriesOutput: GET "/notification-deliveries" query ["ruleId", "status", "maxResults"], "sluice:ListNotificationDeliveries", |o| o.rule_id.as_deref().and_then(pipeline_of_id).map_or_else(|| policy::ANY.into(), policy::pipeline);
        RedeliverNotification -> RedeliverNotificationOutput: POST "/notification-deliveries/{id}/redeliver", "sluice:RedeliverNotification", |o| policy::pipeline(pipeline_of_id(&o.id).unwrap_or("?"));
        // The audit log (issue 15, gov).
        ListAuditRecords -> ListAuditRecordsOutput: GET "/audit" query ["since", "until", "user", "pipeline", "operation", "limit", "beforeSeq"], "sluice:ListAuditRecords", |_| policy::named("audit", "*");
        VerifyAudit -> VerifyAuditOutput: POST "/audit/verify", "sluice:VerifyAudit", |_| policy::named("audit", "*");
        // Permissions: teams, roles, delegations, who may do what (issue 15, policy).
        CreateTeam -> TeamView: POST "/teams", "sluice:CreateTeam", |o| policy::named("team", &o.name);
        ListTeams -> ListTeamsOutput: GET "/teams", "sluice:ListTeams", |_| policy::ANY.into();
        GetTeam -> TeamView: GET "/teams/{name}", "sluice:GetTeam", |o| policy::named("team", &o.name);
        DeleteTeam -> DeleteTeamOutput: DELETE "/teams/{name}", "sluice:DeleteTeam", |o| policy::named("team", &o.name);
        AddTeamMember -> TeamView: POST "/teams/{team}/members", "sluice:AddTeamMember", |o| policy::named("team", &o.team);
        RemoveTeamMember -> TeamView: DELETE "/teams/{team}/members/{user}", "sluice:RemoveTeamMember", |o| policy::named("team", &o.team);
        GrantTeamRole -> GrantView: POST "/teams/{team}/grants", "sluice:GrantTeamRole", |o| policy::named("team", &o.team);
        RevokeTeamRole -> RevokeTeamRoleOutput: DELETE "/teams/{team}/grants/{to}/{role}", "sluice:RevokeTeamRole", |o| policy::named("team", &o.team);
        CreateRole -> RoleView: POST "/roles", "sluice:CreateRole", |o| policy::named("role", &o.name);
        ListRoles -> ListRolesOutput: GET "/roles", "sluice:ListRoles", |_| policy::ANY.into();
        GetRole -> RoleView: GET "/roles/{name}", "sluice:GetRole", |o| policy::named("role", &o.name);
        DeleteRole -> DeleteRoleOutput: DELETE "/roles/{name}", "sluice:DeleteRole", |o| policy::named("role", &o.name);
        DeleteUser -> DeleteUserOutput: DELETE "/users/{name}", "sluice:DeleteUser", |o| policy::named("user", &o.name);
        SetUserRole -> UserView: PUT "/users/{name}/role", "sluice:SetUserRole", |o| policy::named("user", &o.name);
        WhoAmI -> WhoAmIOutput: GET "/whoami", "sluice:WhoAmI", |_| policy::ANY.into();
        CheckAccess -> CheckAccessOutput: GET "/can" query ["action", "resource"], "sluice:CheckAccess", |_| policy::ANY.into();
        // The revision flow and artifacts (issue 16, pages). The revision listings read every
        // pipeline: the driver keeps only those the caller may read (GetPipelineExecution).
        ListRevisions -> ListRevisionsOutput: GET "/revisions" query ["prefix", "maxResults"], "sluice:ListRevisions", |_| policy::ANY.into();
        GetRevisionFlow -> GetRevisionFlowOutput: GET "/revisions/{revision}", "sluice:GetRevisionFlow", |_| policy::ANY.into();
        GetArtifact -> GetArtifactOutput: GET "/pipelines/{pipelineName}/executions/{pipelineExecutionId}/artifacts/{artifactName}", "sluice:GetArtifact", |o| policy::pipeline(&o.pipeline_name);
    }
    internal {
        // A binary body with a signature header; described before the driver sees it.
        PushPlugin -> PushPluginOutput, "sluice:PushPlugin", |o| policy::named("plugin", &format!("{}@{}", o.info.name, o.info.version));
        // Asked by `PushPlugin`'s transport before any of the component's code runs.
        VetPluginSignature -> (), "sluice:PushPlugin", |_| policy::named("plugin", "*");
        // Authenticated by the signature of its raw body, not by a token.
        DeliverWebhook -> DeliverWebhookOutput, "sluice:DeliverWebhook", |o| policy::pipeline(&o.pipeline_name);
        // Asked by the S3 subset for a job's temporary credentials (SigV4 with them).
        JobCredentials -> JobCredentialsOutput, "s3:GetObject", |o| policy::named("job", &o.access_key_id);
        RecordJobOutput -> EmptyOutput, "s3:PutObject", |o| policy::named("job", &o.access_key_id);
        // Data lifecycle (issue 17, life): `POST /v1/backups` (CreateBackup) is routed by hand
        // (`crate::backup`); its transport asks the driver to begin and to end.
        BeginBackup -> BeginBackupOutput, "sluice:CreateBackup", |op| policy::named("backup", &op.to);
        EndBackup -> (), "sluice:CreateBackup", |op| policy::named("backup", &op.to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_names_its_resource() {
        let start = StartPipelineExecution { name: "web".into(), ..Default::default() }.into_request();
        assert_eq!((start.permission(), start.resource().as_str()), ("codepipeline:StartPipelineExecution", "pipeline/web"));
        let create = CreatePipeline { pipeline_declaration: "pipeline:\n  name: site\n".into(), ..Default::default() };
        assert_eq!(create.resource(), "pipeline/site");
        assert_eq!(CreatePipeline { pipeline_declaration: "][".into(), ..Default::default() }.resource(), "pipeline/*");
        assert_eq!(permission_of("PushPlugin"), Some("sluice:PushPlugin"));
        let all = actions();
        assert!(all.contains(&"sluice:UseSecret") && all.contains(&"codepipeline:PutApprovalResult"));
        // Every admin-only action of the built-in roles is an operation's.
        for action in crate::policy::roles::ADMIN_ONLY {
            assert!(all.contains(action), "{action}");
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
