//! Extended attributes at the vfs: which namespaces the mount serves.

use crate::harness::Env;

#[test]
fn vfs_user_xattrs_are_served_and_security_and_system_ones_are_not() {
    let env = Env::new();
    let f = env.put("f", b"x");
    let vfs = &env.vfs;
    env.rt
        .block_on(vfs.setxattr(f, b"user.a", b"1", 0))
        .unwrap();
    assert_eq!(env.rt.block_on(vfs.getxattr(f, b"user.a")).unwrap(), b"1");
    // Nothing enforces LSM labels, file capabilities or POSIX ACLs here: refused, not
    // stored and shown as if they applied.
    for name in [
        &b"security.selinux"[..],
        b"security.capability",
        b"system.posix_acl_access",
        b"system.posix_acl_default",
    ] {
        let errno = |r: Result<(), alluxio::error::FsError>| r.unwrap_err().errno();
        assert_eq!(
            errno(env.rt.block_on(vfs.getxattr(f, name)).map(|_| ())),
            libc::EOPNOTSUPP
        );
        assert_eq!(
            errno(env.rt.block_on(vfs.setxattr(f, name, b"v", 0))),
            libc::EOPNOTSUPP
        );
        assert_eq!(
            errno(env.rt.block_on(vfs.removexattr(f, name))),
            libc::EOPNOTSUPP
        );
    }
    assert_eq!(
        env.rt.block_on(vfs.listxattr(f)).unwrap(),
        b"user.a\0",
        "only the served names are listed"
    );
}
