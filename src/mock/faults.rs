//! The responses for injected faults, shaped like the failing path's API family.

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Map};

use super::wire::{self, Family, Resp};
use super::{login, pages, Fault};

/// How long a hung request stays unanswered: far beyond any client timeout worth having.
const HANG_FOR: Duration = Duration::from_secs(120);

pub(super) async fn respond(fault: Fault, family: Family) -> Resp {
    match fault {
        Fault::Hang => {
            tokio::time::sleep(HANG_FOR).await;
            gateway_timeout(family)
        }
        Fault::IpBan => ip_ban(),
        Fault::NonJson => wire::html(StatusCode::OK, pages::throttle_page()),
        Fault::PermissionDenied => permission_denied(family),
        Fault::QpsLimit => qps_limit(family),
        Fault::ServerError => server_error(family),
        Fault::InvalidToken => invalid_token(family),
        Fault::IpNotWhitelisted => ip_not_whitelisted(family),
        Fault::UnknownApi => match family {
            Family::Legacy => wire::json(
                StatusCode::OK,
                &json!({"errcode": 22, "errmsg": "不合法ApiName", "sub_msg": "该API不存在或已下线"}),
                &wire::new_api_request_id(),
            ),
            Family::NewApi | Family::LoginPage => wire::api_error(
                StatusCode::NOT_FOUND,
                "InvalidAction.NotFound",
                "Specified api is not found, please check your url and method.",
            ),
        },
        Fault::OutsideVisibleRange => match family {
            Family::Legacy => wire::oapi_error(50002, "员工不在授权范围内"),
            Family::NewApi | Family::LoginPage => permission_denied(family),
        },
    }
}

fn ip_not_whitelisted(family: Family) -> Resp {
    let ip = super::IP_NOT_WHITELISTED_ADDRESS;
    match family {
        Family::Legacy => wire::oapi_error(
            60020,
            &format!("访问ip不在白名单之中,请参考FAQ:https://open.dingtalk.com/document/orgapp/faq-kq01k,request ip={ip} appKey(dingmockclientid0001)"),
        ),
        Family::NewApi | Family::LoginPage => wire::api_error(
            StatusCode::FORBIDDEN,
            "Forbidden.AccessDenied.IpNotInWhiteList",
            &format!("访问IP不在白名单中 request ip={ip}"),
        ),
    }
}

fn ip_ban() -> Resp {
    let uuid = wire::new_api_request_id().to_lowercase();
    wire::json(
        StatusCode::OK,
        &json!({"status": 1111, "wait": 5, "source": "x5", "punish": "deny", "uuid": uuid}),
        &uuid,
    )
}

fn permission_denied(family: Family) -> Resp {
    match family {
        Family::NewApi => {
            let mut extra = Map::new();
            extra.insert(
                "accessdenieddetail".into(),
                json!({"requiredScopes": ["Contact.User.Read"]}),
            );
            wire::api_error_with(
                StatusCode::FORBIDDEN,
                "Forbidden.AccessDenied.AccessTokenPermissionDenied",
                "没有调用该接口的权限，接口权限申请参考：https://open.dingtalk.com/document/orgapp/add-api-permission",
                extra,
            )
        }
        Family::Legacy => wire::oapi_error(60011, "没有调用该接口的权限"),
        Family::LoginPage => {
            login::error_page(StatusCode::FORBIDDEN, "应用没有使用钉钉登录的权限。")
        }
    }
}

fn qps_limit(family: Family) -> Resp {
    match family {
        Family::NewApi => wire::api_error(
            StatusCode::FORBIDDEN,
            "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
            "当前应用调用该接口的频率已超过限制",
        ),
        Family::Legacy => wire::oapi_error(90018, "当前应用调用该接口的频率已超过限制"),
        Family::LoginPage => {
            login::error_page(StatusCode::TOO_MANY_REQUESTS, "请求过于频繁，请稍后再试。")
        }
    }
}

fn server_error(family: Family) -> Resp {
    match family {
        Family::NewApi => wire::api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceUnavailable",
            "服务暂时不可用，请稍后重试",
        ),
        Family::Legacy => {
            wire::oapi_error_status(StatusCode::INTERNAL_SERVER_ERROR, -1, "系统繁忙")
        }
        Family::LoginPage => {
            login::error_page(StatusCode::INTERNAL_SERVER_ERROR, "系统繁忙，请稍后再试。")
        }
    }
}

fn invalid_token(family: Family) -> Resp {
    match family {
        Family::NewApi => wire::api_invalid_token(),
        Family::Legacy => wire::oapi_auth_error("40014", "不合法的access_token"),
        Family::LoginPage => login::error_page(StatusCode::BAD_REQUEST, "登录凭证无效。"),
    }
}

fn gateway_timeout(family: Family) -> Resp {
    match family {
        Family::NewApi => wire::api_error(
            StatusCode::GATEWAY_TIMEOUT,
            "GatewayTimeout",
            "upstream timed out",
        ),
        Family::Legacy => wire::oapi_error_status(StatusCode::GATEWAY_TIMEOUT, -1, "系统繁忙"),
        Family::LoginPage => login::error_page(StatusCode::GATEWAY_TIMEOUT, "请求超时。"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::Value;

    async fn body_json(resp: Resp) -> Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn each_fault_has_the_family_shape() {
        let resp = respond(Fault::PermissionDenied, Family::NewApi).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let body = body_json(resp).await;
        assert_eq!(
            body["accessdenieddetail"]["requiredScopes"][0],
            "Contact.User.Read"
        );

        let resp = respond(Fault::PermissionDenied, Family::Legacy).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body_json(resp).await["errcode"], 60011);

        let body = body_json(respond(Fault::QpsLimit, Family::Legacy).await).await;
        assert_eq!(body["errcode"], 90018);

        let resp = respond(Fault::ServerError, Family::Legacy).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);

        let body = body_json(respond(Fault::InvalidToken, Family::Legacy).await).await;
        assert_eq!(body["errcode"], 88);
        assert_eq!(body["sub_code"], "40014");

        let body = body_json(respond(Fault::IpBan, Family::NewApi).await).await;
        assert_eq!(body["punish"], "deny");
        assert_eq!(body["status"], 1111);

        let resp = respond(Fault::NonJson, Family::NewApi).await;
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(serde_json::from_slice::<Value>(&bytes).is_err());
    }
}
