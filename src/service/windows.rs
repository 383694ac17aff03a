//! Windows: a service of the Service Control Manager that starts at boot (as LocalSystem, with the
//! installing user's data dir) and that the SCM restarts after a failure. `service run` is the entry point
//! the SCM starts: it hands the thread to the service dispatcher, which calls back into [`service_main`].
//! Installing and removing a service needs an administrator's terminal.

use super::{SERVICE_NAME, ServiceState, service_args};
use anyhow::Context;
use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState as ScmState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

/// What the user may want to know after `install`.
pub const HINT: &str =
    "It starts with Windows. Manage it in services.msc, or: sc.exe query streamr-node";
/// A service's stderr goes nowhere: the log file is the log.
pub const LOG_TO_STDERR: bool = false;

/// The configuration `service run` built, for the dispatcher's callback (it takes no arguments of ours).
static CONFIG: Mutex<Option<crate::config::Config>> = Mutex::new(None);
/// The exit code of the node, back from the callback.
static EXIT: Mutex<Option<ExitCode>> = Mutex::new(None);

fn access_hint(e: windows_service::Error) -> anyhow::Error {
    anyhow::Error::new(e).context(
        "the Windows service manager refused (installing or removing a service needs a terminal opened \
         with \"Run as administrator\")",
    )
}

/// Creates the service (automatic start, restart on failure) and starts it.
pub fn install(exe: &Path, data_dir: &Path) -> anyhow::Result<String> {
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .map_err(access_hint)?;
    let info = ServiceInfo {
        name: OsString::from(SERVICE_NAME),
        display_name: OsString::from("streamr-node (live video relay)"),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe.to_path_buf(),
        launch_arguments: service_args(data_dir),
        dependencies: vec![],
        account_name: None, // LocalSystem
        account_password: None,
    };
    let access = ServiceAccess::QUERY_STATUS | ServiceAccess::START | ServiceAccess::CHANGE_CONFIG;
    // A reinstall (a moved binary) updates the existing service.
    let service = match manager.open_service(SERVICE_NAME, access) {
        Ok(s) => {
            s.change_config(&info).map_err(access_hint)?;
            s
        }
        Err(_) => manager.create_service(&info, access).map_err(access_hint)?,
    };
    service
        .set_description(
            "Relays live video to friends: RTMP for OBS and players, a peer-to-peer mesh.",
        )
        .map_err(access_hint)?;
    service
        .update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
            reboot_msg: None,
            command: None,
            actions: Some(vec![
                ServiceAction {
                    action_type: ServiceActionType::Restart,
                    delay: Duration::from_secs(5),
                };
                3
            ]),
        })
        .map_err(access_hint)?;
    // An error exit (not only a crash of the process) counts as a failure to restart after.
    service
        .set_failure_actions_on_non_crash_failures(true)
        .map_err(access_hint)?;
    if service.query_status().map_err(access_hint)?.current_state != ScmState::Running {
        service
            .start::<OsString>(&[])
            .map_err(access_hint)
            .context("the service was installed but did not start; see the log in the data dir")?;
    }
    Ok(format!("Windows service {SERVICE_NAME}"))
}

/// Stops and deletes the service. `None` when it was not installed.
pub fn uninstall() -> anyhow::Result<Option<String>> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(access_hint)?;
    let access = ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE;
    let Ok(service) = manager.open_service(SERVICE_NAME, access) else {
        return Ok(None);
    };
    service.delete().map_err(access_hint)?;
    if service.query_status().map_err(access_hint)?.current_state != ScmState::Stopped {
        service.stop().map_err(access_hint)?;
    }
    Ok(Some(format!("Windows service {SERVICE_NAME}")))
}

/// Whether the service exists and runs.
pub fn status() -> anyhow::Result<ServiceState> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(access_hint)?;
    let Ok(service) = manager.open_service(SERVICE_NAME, ServiceAccess::QUERY_STATUS) else {
        return Ok(ServiceState {
            installed: None,
            running: false,
            detail: String::new(),
        });
    };
    let state = service.query_status().map_err(access_hint)?.current_state;
    Ok(ServiceState {
        installed: Some(format!("Windows service {SERVICE_NAME}")),
        running: state == ScmState::Running,
        detail: format!("{state:?}"),
    })
}

/// Hands this thread to the service dispatcher, which runs [`service_main`] until the SCM stops it.
pub fn run(config: crate::config::Config) -> ExitCode {
    *CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = Some(config);
    if let Err(e) = service_dispatcher::start(SERVICE_NAME, ffi_service_main) {
        tracing::error!(error = %e, "cannot reach the Windows service manager");
        eprintln!(
            "streamr-node: `service run` is started by the Windows service manager ({e}); in a terminal, \
             use `streamr-node run`"
        );
        return ExitCode::FAILURE;
    }
    EXIT.lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or(ExitCode::SUCCESS)
}

define_windows_service!(ffi_service_main, service_main);

/// Called by the dispatcher on its own thread: report Running, run the node until Stop or Shutdown,
/// report Stopped with the node's outcome (an error exit makes the SCM restart it).
fn service_main(_arguments: Vec<OsString>) {
    let Some(config) = CONFIG.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let stop = CancellationToken::new();
    let on_control = {
        let stop = stop.clone();
        move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                stop.cancel();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        }
    };
    let status = match service_control_handler::register(SERVICE_NAME, on_control) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot register with the Windows service manager");
            return;
        }
    };
    let report = |state: ScmState, accept: ServiceControlAccept, exit: u32| {
        let _ = status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accept,
            exit_code: if exit == 0 {
                ServiceExitCode::Win32(0)
            } else {
                ServiceExitCode::ServiceSpecific(exit)
            },
            checkpoint: 0,
            wait_hint: Duration::from_secs(10),
            process_id: None,
        });
    };
    report(
        ScmState::Running,
        ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
        0,
    );
    let code = crate::serve(config, stop.cancelled_owned());
    let failed = code != ExitCode::SUCCESS;
    *EXIT.lock().unwrap_or_else(|e| e.into_inner()) = Some(code);
    report(
        ScmState::Stopped,
        ServiceControlAccept::empty(),
        u32::from(failed),
    );
}
