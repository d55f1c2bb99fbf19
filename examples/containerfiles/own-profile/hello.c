/* A tiny HTTP server: answers every request on port 8080 with /etc/hello/greeting. */
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
    char greeting[256] = {0}, request[1024], reply[512];
    FILE *file = fopen("/etc/hello/greeting", "r");
    if (file == NULL || fgets(greeting, sizeof greeting, file) == NULL) {
        perror("/etc/hello/greeting");
        return 1;
    }
    fclose(file);
    int server = socket(AF_INET, SOCK_STREAM, 0), on = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(8080), .sin_addr.s_addr = htonl(INADDR_ANY)};
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (bind(server, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(server, 16) != 0) {
        perror("listen on 8080");
        return 1;
    }
    for (;;) {
        int client = accept(server, NULL, NULL);
        if (client < 0)
            continue;
        read(client, request, sizeof request);
        int length = snprintf(reply, sizeof reply, "HTTP/1.0 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
                              strlen(greeting), greeting);
        write(client, reply, (size_t)length);
        close(client);
    }
}
