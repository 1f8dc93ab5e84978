/*
 * wharf's pause: the first process of a pod sandbox. It holds the pod's namespaces, reaps the
 * zombies of processes reparented to it (it is PID 1 of the pod's PID namespace when that is
 * shared), and exits 0 on SIGINT or SIGTERM. Built statically by wharf-cri's build script and
 * embedded in wharfd, which imports it as the built-in sandbox image.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef WHARF_VERSION
#define WHARF_VERSION "unknown"
#endif

static void sigdown(int signo) {
    (void)signo;
    _exit(0);
}

static void sigreap(int signo) {
    int saved = errno;
    (void)signo;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int on(int sig, void (*handler)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
        printf("wharf pause %s\n", WHARF_VERSION);
        return 0;
    }
    if (getpid() != 1) {
        fprintf(stderr, "pause: warning: not running as PID 1 (pid %d)\n", (int)getpid());
    }
    if (on(SIGINT, sigdown, 0) < 0 || on(SIGTERM, sigdown, 0) < 0 ||
        on(SIGCHLD, sigreap, SA_NOCLDSTOP | SA_RESTART) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
    return 42;
}
