/*
 * protect-clock CMD [ARG...]: runs CMD with the clock system calls refused (EPERM), as the
 * seccomp filter of systemd's ProtectClock=yes refuses them to the vxedge unit: adjtimex and
 * clock_adjtime even for a read. For lab tests (test/lab/vxedge.ts, protectClock): the lab has
 * no systemd to run the unit under. No architecture check (systemd's filter has one): the
 * syscall numbers are this build's own, and the test runs nothing of another ABI.
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: protect-clock CMD [ARG...]\n");
    return 2;
  }
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    DENY(SYS_adjtimex),
    DENY(SYS_clock_adjtime),
    DENY(SYS_clock_settime),
    DENY(SYS_settimeofday),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = { .len = sizeof f / sizeof f[0], .filter = f };
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
    perror("protect-clock: seccomp");
    return 1;
  }
  execvp(argv[1], argv + 1);
  perror("protect-clock: exec");
  return 127;
}
