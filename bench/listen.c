/* The listening fixture, for chain-10-ready and fan-in.
 *
 *   listen PORT DELAY_MS [ready-fd:N] [ready-file:PATH] [count:PATH]
 *   listen probe PORT
 *
 * Appends its pid to the `count:` file (one line per start), sleeps DELAY_MS, listens
 * on 127.0.0.1:PORT, then says it is ready the ways it is asked to: a newline on fd N
 * (s6's notification-fd), or creating PATH (horust's file-path). It answers every
 * connection with "ok PID\n" until it is killed.
 *
 * `probe PORT` exits 0 when a connection to 127.0.0.1:PORT is accepted: a readiness
 * check script (runit's ./check) with no interpreter to start. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return address;
}

static int probe(int port) {
    struct sockaddr_in address = loopback(port);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    return s >= 0 && connect(s, (struct sockaddr *)&address, sizeof address) == 0 ? 0 : 1;
}

static void count_start(const char *path) {
    char line[32];
    int n = snprintf(line, sizeof line, "%d\n", getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        write(fd, line, n);
        close(fd);
    }
}

static int listen_on(int port) {
    struct sockaddr_in address = loopback(port);
    int s = socket(AF_INET, SOCK_STREAM, 0), on = 1;
    if (s < 0) return -1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (bind(s, (struct sockaddr *)&address, sizeof address) != 0 || listen(s, 1024) != 0)
        return -1;
    return s;
}

static void say_ready(int argc, char **argv) {
    for (int i = 3; i < argc; i++) {
        if (strncmp(argv[i], "ready-fd:", 9) == 0) {
            int fd = atoi(argv[i] + 9);
            write(fd, "\n", 1);
            close(fd);
        } else if (strncmp(argv[i], "ready-file:", 11) == 0) {
            close(open(argv[i] + 11, O_WRONLY | O_CREAT, 0644));
        }
    }
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "probe") == 0) return probe(atoi(argv[2]));
    if (argc < 3) return 2;
    for (int i = 3; i < argc; i++)
        if (strncmp(argv[i], "count:", 6) == 0) count_start(argv[i] + 6);
    long delay = atol(argv[2]);
    struct timespec pause = {delay / 1000, (delay % 1000) * 1000000L};
    nanosleep(&pause, NULL);
    int server = listen_on(atoi(argv[1]));
    if (server < 0) {
        perror("listen");
        return 1;
    }
    say_ready(argc, argv);
    char answer[32];
    int n = snprintf(answer, sizeof answer, "ok %d\n", getpid());
    for (;;) {
        int client = accept(server, NULL, NULL);
        if (client < 0) continue;
        write(client, answer, n);
        close(client);
    }
}
