//! The client's behaviour against the project's own mock DingTalk and its fault injection:
//! retries, token refresh, throttling, timeouts and the directory look-ups. (Byte-level answer
//! shapes the mock never produces are tested in `client.rs` with canned replies.)

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use super::api::Api;
use super::client::{ClientSettings, DingTalkClient, Endpoints, RetryPolicy};
use super::error::DingTalkError;
use crate::mock::{Fault, MockDingTalk, MockSettings, IP_NOT_WHITELISTED_ADDRESS};

/// A running mock and a client pointed at it (all three hosts on one base).
struct Running {
    mock: MockDingTalk,
    addr: SocketAddr,
}

impl Running {
    async fn start() -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mock = MockDingTalk::new(MockSettings::default());
        tokio::spawn(crate::mock::serve(
            listener,
            mock.clone(),
            std::future::pending(),
        ));
        Running { mock, addr }
    }

    fn client_with(&self, secret: Option<&str>, timeout: Duration) -> DingTalkClient {
        let settings = self.mock.settings();
        DingTalkClient::new(
            ClientSettings {
                endpoints: Endpoints::single(format!("http://{}", self.addr).parse().unwrap()),
                client_id: settings.client_id.clone(),
                client_secret: secret.unwrap_or(&settings.client_secret).to_owned(),
                timeout,
                retry: RetryPolicy {
                    max_retries: 2,
                    base_delay: Duration::from_millis(5),
                },
                exclusive_corp_id: None,
                metrics: Default::default(),
            },
            reqwest::Client::new(),
        )
    }

    fn client(&self) -> DingTalkClient {
        self.client_with(None, Duration::from_secs(5))
    }

    fn calls(&self, api: Api) -> usize {
        self.mock.call_count(&format!("/{}", api.path()))
    }

    fn fault(&self, api: Api, fault: Fault, times: u32) {
        self.mock
            .inject_fault(&format!("/{}", api.path()), fault, times);
    }

    fn union_id(&self, userid: &str) -> String {
        self.mock.org().user(userid).unwrap().union_id.clone()
    }
}

#[tokio::test]
async fn a_scan_login_code_becomes_a_profile_once() {
    let r = Running::start().await;
    let client = r.client();
    let code = r.mock.issue_auth_code("zhangsan", true).unwrap();
    let token = client.exchange_code(&code).await.unwrap();
    assert_eq!(token.corp_id.as_deref(), Some("dingcorp00000001"));
    let me = client.current_user(&token).await.unwrap();
    assert_eq!(me.union_id, r.union_id("zhangsan"));
    assert_eq!(me.nick, "张三");
    // Codes work once: the second exchange is a bad code, the user just starts again.
    let again = client.exchange_code(&code).await.unwrap_err();
    assert!(again.is_bad_code(), "{again:?}");
}

#[tokio::test]
async fn wrong_credentials_are_a_configuration_error_not_a_bad_code() {
    let r = Running::start().await;
    let client = r.client_with(Some("not-the-secret"), Duration::from_secs(5));
    let code = r.mock.issue_auth_code("zhangsan", true).unwrap();
    let err = client.exchange_code(&code).await.unwrap_err();
    assert!(!err.is_bad_code(), "{err:?}");
    assert!(err.operator_hint().contains("client_secret"), "{err}");
    let err = client.user_detail("zhangsan").await.unwrap_err();
    assert_eq!(err.api(), Api::AppToken);
    assert!(!err.to_string().contains("not-the-secret"));
}

#[tokio::test]
async fn qps_answers_are_retried_and_exhausted_retries_are_rate_limited() {
    let r = Running::start().await;
    let client = r.client();
    r.fault(Api::UserIdByUnionId, Fault::QpsLimit, 2);
    assert_eq!(
        client
            .user_id_by_union_id(&r.union_id("lisi"))
            .await
            .unwrap()
            .as_deref(),
        Some("lisi")
    );
    assert_eq!(r.calls(Api::UserIdByUnionId), 3);

    r.fault(Api::DepartmentChains, Fault::QpsLimit, 3);
    let err = client.department_chains("lisi").await.unwrap_err();
    assert!(err.is_throttled(), "{err:?}");
    assert!(matches!(err, DingTalkError::RateLimited { .. }));
    assert_eq!(
        r.calls(Api::DepartmentChains),
        3,
        "the first try and two retries"
    );
}

#[tokio::test]
async fn a_rejected_app_token_is_refetched_and_the_call_retried_once() {
    let r = Running::start().await;
    let client = r.client();
    r.fault(Api::UserDetail, Fault::InvalidToken, 1);
    assert_eq!(client.user_detail("lisi").await.unwrap().name, "李四");
    assert_eq!(r.calls(Api::AppToken), 2);
    assert_eq!(r.calls(Api::UserDetail), 2);

    // Rejected again after the refetch: an error, not a loop.
    r.fault(Api::UserDetail, Fault::InvalidToken, 2);
    let err = client.user_detail("lisi").await.unwrap_err();
    assert!(
        matches!(&err, DingTalkError::Legacy { errcode: 88, sub_code: Some(s), .. } if s == "40014"),
        "{err:?}"
    );
    assert_eq!(r.calls(Api::AppToken), 3);
    assert_eq!(r.calls(Api::UserDetail), 4);
}

#[tokio::test]
async fn bans_and_html_answers_are_not_retried() {
    let r = Running::start().await;
    let client = r.client();
    r.fault(Api::UserDetail, Fault::NonJson, 1);
    let err = client.user_detail("lisi").await.unwrap_err();
    assert!(matches!(err, DingTalkError::Throttled { .. }), "{err:?}");
    assert!(
        !err.is_throttled(),
        "a ban page is not 'busy for a few seconds'"
    );
    assert_eq!(r.calls(Api::UserDetail), 1);

    r.fault(Api::UserIdByUnionId, Fault::IpBan, 1);
    let err = client.user_id_by_union_id("u").await.unwrap_err();
    assert!(
        matches!(&err, DingTalkError::Throttled { detail, .. } if detail.contains("punish: deny")),
        "{err:?}"
    );
    assert_eq!(r.calls(Api::UserIdByUnionId), 1);
}

#[tokio::test]
async fn a_hanging_dingtalk_times_out_and_codes_are_never_sent_twice() {
    let r = Running::start().await;
    let client = r.client_with(None, Duration::from_millis(300));
    r.fault(Api::UserAccessToken, Fault::Hang, 1);
    let started = std::time::Instant::now();
    let err = client.exchange_code("code-1").await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(r.calls(Api::UserAccessToken), 1);

    r.fault(Api::InAppUser, Fault::Hang, 1);
    let err = client.inapp_user("jsapi-code").await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(r.calls(Api::InAppUser), 1);
}

#[tokio::test]
async fn concurrent_callers_share_one_app_token_fetch() {
    let r = Running::start().await;
    let client = r.client();
    let lookups = (0..20).map(|_| client.user_detail("zhangsan"));
    for answer in futures_util::future::join_all(lookups).await {
        assert_eq!(answer.unwrap().userid, "zhangsan");
    }
    assert_eq!(r.calls(Api::AppToken), 1);
}

#[tokio::test]
async fn directory_look_ups_read_the_organization() {
    let r = Running::start().await;
    let client = r.client();
    assert_eq!(
        client
            .user_id_by_union_id(&r.union_id("zhangsan"))
            .await
            .unwrap()
            .as_deref(),
        Some("zhangsan")
    );
    assert_eq!(client.user_id_by_union_id("nobody").await.unwrap(), None);
    // 孙七's partner colleague belongs to another corp: not an employee here.
    assert_eq!(
        client
            .user_id_by_union_id(&r.union_id("alice.partner"))
            .await
            .unwrap(),
        None
    );
    r.fault(Api::UserIdByUnionId, Fault::OutsideVisibleRange, 1);
    assert_eq!(
        client
            .user_id_by_union_id(&r.union_id("zhangsan"))
            .await
            .unwrap(),
        None,
        "50002: outside the app's visible range is not a member"
    );

    let detail = client.user_detail("zhangsan").await.unwrap();
    assert_eq!(
        (
            detail.name.as_str(),
            detail.dept_id_list.clone(),
            detail.admin,
            detail.active
        ),
        ("张三", vec![101], true, true)
    );
    assert_eq!(
        detail.unionid.as_deref(),
        Some(r.union_id("zhangsan").as_str())
    );
    let chains = client.department_chains("zhangsan").await.unwrap();
    assert!(
        chains
            .iter()
            .any(|c| c.contains(&101) && c.contains(&100) && c.contains(&1)),
        "{chains:?}"
    );
    assert_eq!(
        client.department_name(100).await.unwrap().as_deref(),
        Some("研发部")
    );
    assert_eq!(client.department_name(999).await.unwrap(), None);
}

#[tokio::test]
async fn permission_and_allow_list_refusals_tell_the_operator_what_to_do() {
    let r = Running::start().await;
    let client = r.client();
    r.fault(Api::CurrentUser, Fault::PermissionDenied, 1);
    let code = r.mock.issue_auth_code("zhangsan", true).unwrap();
    let token = client.exchange_code(&code).await.unwrap();
    let err = client.current_user(&token).await.unwrap_err();
    assert!(err.operator_hint().contains("Contact.User.Read"), "{err}");

    r.fault(Api::UserDetail, Fault::PermissionDenied, 1);
    let err = client.user_detail("zhangsan").await.unwrap_err();
    assert!(err.operator_hint().contains("权限管理"), "{err}");

    // errcode 22: the path is not a DingTalk API (dingtalk.oapi_url points elsewhere).
    r.fault(Api::UserDetail, Fault::UnknownApi, 1);
    let err = client.user_detail("zhangsan").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("不合法ApiName (该API不存在或已下线)"),
        "errmsg and sub_msg both kept: {err}"
    );
    assert!(err.operator_hint().contains("dingtalk.oapi_url"), "{err}");

    r.fault(Api::UserDetail, Fault::IpNotWhitelisted, 1);
    let err = client.user_detail("zhangsan").await.unwrap_err();
    assert!(
        err.operator_hint().contains(&format!(
            "DingTalk refuses calls from {IP_NOT_WHITELISTED_ADDRESS}"
        )),
        "{}",
        err.operator_hint()
    );
}
