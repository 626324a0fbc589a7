/* The sandbox ("pause") process of every pod: it holds the pod's namespaces open and, as PID 1
 * of a pod that shares its PID namespace, reaps the zombies the other containers leave. Like the
 * upstream Kubernetes pause it sleeps in pause(), exits 0 on SIGINT or SIGTERM and reaps children
 * on SIGCHLD. Built with `gcc -static` into a FROM scratch image by e2e/k8s/images.sh, because no
 * registry is reachable to pull registry.k8s.io/pause. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "kvstore-pause 1"

static void say(const char *msg) {
  /* write(2) only: the handlers below must stay async-signal-safe. */
  ssize_t ignored = write(STDERR_FILENO, msg, strlen(msg));
  (void)ignored;
}

static void on_shutdown(int signo) {
  say(signo == SIGINT ? "pause: got SIGINT, exiting\n" : "pause: got SIGTERM, exiting\n");
  _exit(0);
}

static void on_child(int signo) {
  (void)signo;
  int saved = errno;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved;
}

static int handle(int signo, void (*handler)(int), int flags) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sa.sa_flags = flags;
  sigemptyset(&sa.sa_mask);
  return sigaction(signo, &sa, NULL);
}

int main(int argc, char **argv) {
  if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
    printf("%s\n", VERSION);
    return 0;
  }
  if (getpid() != 1) {
    say("pause: warning: not PID 1, so orphaned processes are not reaped here\n");
  }
  if (handle(SIGINT, on_shutdown, 0) < 0 || handle(SIGTERM, on_shutdown, 0) < 0 ||
      handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART) < 0) {
    perror("pause: sigaction");
    return 1;
  }
  for (;;) {
    pause();
  }
}
