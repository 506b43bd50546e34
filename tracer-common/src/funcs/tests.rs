//! The function table's invariants: roles, groups, cookies and the rules
//! readers rely on.

use super::*;

#[test]
fn all_lists_every_role_once_in_order() {
    for (i, role) in Role::ALL.iter().enumerate() {
        assert_eq!(*role as usize, i, "{role:?}");
    }
    assert_eq!(Role::Other as usize, Role::ALL.len() - 1, "Other is declared last");
}

#[test]
fn a_library_gets_the_rows_of_its_runtime_major_version() {
    let major = |name, layer, m| for_library(name, layer, m).map(|(_, s)| s.runtime_major);
    assert_eq!(major("cudaMemAdvise", Layer::Runtime, Some(12)), Some(Some(12)));
    assert_eq!(major("cudaMemAdvise", Layer::Runtime, Some(13)), Some(Some(13)));
    // An unknown version gets only the rows valid for every version.
    assert_eq!(major("cudaMemAdvise", Layer::Runtime, None), None);
    assert_eq!(major("cudaMalloc", Layer::Runtime, None), Some(None));
    assert_eq!(major("cudaMemAdvise_v2", Layer::Runtime, Some(13)), None, "gone in 13");
    assert_eq!(major("cuMemAdvise", Layer::Driver, None), Some(None));
    assert_eq!(major("cuMemAdvise", Layer::Runtime, Some(12)), None, "a driver name in a runtime");
}

#[test]
fn every_role_has_a_function() {
    for role in Role::ALL {
        assert!(FUNCS.iter().any(|f| f.role == role), "no function has role {role:?}");
    }
}

/// The name rules the analyses used before roles (annotate, report
/// steps/graphs/memory): every function's role must say the same.
fn role_by_name_rules(f: &FuncSpec) -> Role {
    let n = f.name;
    if let Some(role) = exec::role_by_name(n) {
        return role;
    }
    match f.group {
        Group::Memory if f.out_arg != 0 => Role::Alloc,
        Group::Memory => Role::Free,
        Group::Launch => Role::Launch,
        Group::Memcpy => Role::Copy,
        Group::Memset => Role::Memset,
        Group::Vmm if n == "cuMemMap" => Role::Map,
        Group::Vmm if n == "cuMemUnmap" => Role::Unmap,
        Group::Vmm => Role::VirtualMemory,
        Group::HostMem if n.contains("Free") || n.contains("Unregister") => Role::HostFree,
        Group::HostMem => Role::HostAlloc,
        _ if n.contains("BeginCapture") => Role::CaptureBegin,
        _ if n.contains("EndCapture") => Role::CaptureEnd,
        _ if n.contains("GraphInstantiate") => Role::GraphInstantiate,
        _ if n.starts_with("cudaGraphLaunch") || n.starts_with("cuGraphLaunch") => Role::GraphLaunch,
        _ if n == "cudaDeviceSynchronize" || n == "cuCtxSynchronize" => Role::DeviceSync,
        _ if n.starts_with("cudaEventRecord") || n.starts_with("cuEventRecord") => Role::EventRecord,
        _ if n == "cudaEventSynchronize" || n == "cuEventSynchronize" => Role::EventSync,
        Group::Sync => Role::StreamSync,
        _ if matches!(n, "cuModuleGetFunction" | "cuLibraryGetKernel" | "cuKernelGetFunction") => Role::ModuleLookup,
        Group::Nccl => nccl_role_by_name(n),
        _ => Role::Other,
    }
}

fn nccl_role_by_name(n: &str) -> Role {
    match n {
        "ncclSend" | "ncclRecv" => Role::P2p,
        "ncclGroupStart" | "ncclGroupEnd" => Role::NcclGroup,
        "ncclCommDestroy" | "ncclCommAbort" => Role::CommEnd,
        _ if n.starts_with("ncclCommInit") || n.starts_with("ncclGet") => Role::CommInit,
        _ => Role::Collective,
    }
}

#[test]
fn nccl_functions_are_the_nccl_layer_and_group() {
    for f in FUNCS {
        assert_eq!(f.layer == Layer::Nccl, f.group == Group::Nccl, "{}", f.name);
        assert_eq!(f.layer == Layer::Nccl, f.name.starts_with("nccl"), "{}", f.name);
    }
}

#[test]
fn every_function_has_the_role_its_name_rules_gave() {
    for f in FUNCS {
        assert_eq!(f.role, role_by_name_rules(f), "{}", f.name);
        assert_eq!(f.group, f.role.group(), "{}", f.name);
    }
}

#[test]
fn roles_carry_what_their_readers_take_from_the_row() {
    for f in FUNCS {
        match f.role {
            // The annotator reads the kernel handle at the first argument's word.
            Role::Launch => {
                let handle = f.args[0];
                assert!(matches!((handle.name, handle.fmt), ("f" | "func", Fmt::Hex)), "{}", f.name);
            }
            // A lookup by name is one whose probe copies the name.
            Role::ModuleLookup => {
                assert_eq!(f.str_arg != 0, matches!(f.name, "cuModuleGetFunction" | "cuLibraryGetKernel"), "{}", f.name)
            }
            _ => {}
        }
        // Steps took a driver copy's direction from its name.
        assert_eq!(f.fixed_copy_kind() == Some("DtoH"), f.name.starts_with("cuMemcpyDtoH"), "{}", f.name);
    }
}
