/* ndlink: netdiag's userspace WAN link emulator — one process per link, two threads per
 * direction (reader and writer).
 *
 * Why C: at 500 Mbit/s a direction carries ~42k packets/s; CPython spends ~10 us of
 * interpreter time per packet on read+decide+write, which alone is ~40 % of a core per
 * direction before any timing work, and its timer precision suffers under the GIL. Here
 * most of the CPU time is the kernel's own (a TUN write runs the receiving network stack),
 * and threads sleep with ppoll() on a 1 ns timer slack, so delay has sub-millisecond
 * precision.
 *
 * Model per direction (like netem "delay D rate R limit Q" + loss):
 *   arrival -> loss (seeded PRNG) -> bottleneck queue (tail drop at Q packets)
 *           -> serialization at R (tx_end = max(now, prev_tx_end) + bits/R)
 *           -> propagation (D +- uniform jitter, never reordered) -> delivery
 *
 * Lifetime: stdin is a pipe from the supervisor; when it closes (supervisor exit, even
 * kill -9) this process exits and its TUN devices vanish with their file descriptors.
 * Control: lines on a FIFO: "ab|ba DELAY_NS JITTER_NS RATE_BPS LOSS_PPB QUEUE_PKTS", or
 * "stats" to rewrite the stats file now. Stats: JSON, rewritten once a second and at exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define SLOT_DATA 2048
/* deliver up to this early rather than sleep again for less than a wake-up costs: at
   500 Mbit/s packets are 24 us apart and one wake-up per packet cost ~25 % more CPU */
#define SLACK_NS 50000
#define MAX_LEAD_NS 500000

struct cfg {
    uint64_t delay_ns, jitter_ns, rate_bps, loss_ppb, queue_pkts;
};

struct slot {
    uint64_t deliver_ns;
    uint32_t len;
    unsigned char data[SLOT_DATA];
};

/* Each direction has two threads: a reader (TUN in -> loss, queue, schedule) and a writer
   (delay line -> TUN out at the scheduled time). The write carries the receiving kernel's
   network stack with it, so at 500 Mbit/s it alone is most of a core; the reader hands
   packets over through a small single-producer/single-consumer inbox. */
#define INBOX 128 /* power of two */

struct dir {
    const char *name;
    int in_fd, out_fd;
    int wake_r, wake_w; /* eventfds: the control thread pokes both after a config change */
    int data_fd;        /* eventfd: the reader pokes the writer when it idles or lags */
    pthread_mutex_t mu; /* guards pending/gen */
    struct cfg pending;
    uint64_t gen;
    struct slot *inbox;
    size_t in_head, in_tail; /* writer advances head, reader advances tail */
    int writer_idle;
    /* reader-private */
    struct cfg cfg;
    uint64_t seen_gen;
    uint64_t rng;
    uint64_t *txq; /* tx_end times of packets still in the bottleneck queue */
    size_t txcap, txhead, txcount;
    uint64_t last_tx_end, last_deliver;
    uint64_t idle_ns; /* time the serializer had nothing to send (rate-limited links) */
    /* writer-private */
    uint64_t w_seen_gen;
    struct slot *ring;
    size_t cap, head, count;
    int64_t lead_ns; /* EWMA of how late ppoll wakes us: we ask to wake that much early */
    /* counters, read racily by the stats writer (aligned 64-bit: fine) */
    volatile uint64_t rx_pkts, rx_bytes, tx_pkts, tx_bytes, drop_loss, drop_queue, drop_overflow,
        write_err;
};

static struct dir dirs[2];
static volatile sig_atomic_t stopping;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void die(const char *what) {
    fprintf(stderr, "ndlink: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int open_tun(const char *ns_path, const char *dev, int mtu) {
    int nsfd = open(ns_path, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0) die(ns_path);
    if (setns(nsfd, CLONE_NEWNET) != 0) die("setns");
    close(nsfd);
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) die("/dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, dev, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) die("TUNSETIFF");
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) die("socket");
    ifr.ifr_mtu = mtu;
    if (ioctl(s, SIOCSIFMTU, &ifr) != 0) die("SIOCSIFMTU");
    ifr.ifr_qlen = 1000;
    if (ioctl(s, SIOCSIFTXQLEN, &ifr) != 0) die("SIOCSIFTXQLEN");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) die("SIOCGIFFLAGS");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) die("SIOCSIFFLAGS");
    close(s);
    return fd;
}

static size_t slots_for(const struct cfg *c) {
    /* the delay line holds rate x (delay + jitter) bytes; count MTU-sized packets twice over
       for headroom against small packets, plus the queue; bounded so memory stays sane */
    double inflight = c->rate_bps ? (double)c->rate_bps * (double)(c->delay_ns + c->jitter_ns) / 8e9 / 1500.0 : 8192;
    double n = 2 * inflight + (double)c->queue_pkts + 1024;
    if (n > 262144) n = 262144;
    return (size_t)n;
}

static void apply_ring(struct dir *d, const struct cfg *c) {
    size_t want = slots_for(c);
    if (want > d->cap) { /* grow, keeping queued packets in order */
        struct slot *r = malloc(want * sizeof *r);
        if (!r) die("malloc ring");
        for (size_t i = 0; i < d->count; i++) r[i] = d->ring[(d->head + i) % d->cap];
        free(d->ring);
        d->ring = r;
        d->cap = want;
        d->head = 0;
    }
}

static void apply_queue(struct dir *d, const struct cfg *c) {
    d->cfg = *c;
    size_t wq = c->queue_pkts + 1;
    if (wq != d->txcap) {
        uint64_t *q = malloc(wq * sizeof *q);
        if (!q) die("malloc txq");
        size_t keep = d->txcount < wq ? d->txcount : wq;
        for (size_t i = 0; i < keep; i++) q[i] = d->txq[(d->txhead + d->txcount - keep + i) % d->txcap];
        free(d->txq);
        d->txq = q;
        d->txcap = wq;
        d->txhead = 0;
        d->txcount = keep;
    }
}

/* reader: the packet's fate under loss and the bottleneck queue; its delivery time, or 0 */
static uint64_t admit(struct dir *d, uint32_t len, uint64_t now) {
    const struct cfg *c = &d->cfg;
    d->rx_pkts++;
    d->rx_bytes += len;
    if (c->loss_ppb && (splitmix(&d->rng) % 1000000000ull) < c->loss_ppb) {
        d->drop_loss++;
        return 0;
    }
    uint64_t tx_end = now;
    if (c->rate_bps) {
        while (d->txcount && d->txq[d->txhead] <= now) {
            d->txhead = (d->txhead + 1) % d->txcap;
            d->txcount--;
        }
        if (d->txcount >= c->queue_pkts) {
            d->drop_queue++;
            return 0;
        }
        if (d->last_tx_end < now) /* the serializer sat idle since the last packet left it */
            __atomic_add_fetch(&d->idle_ns, now - (d->last_tx_end ? d->last_tx_end : now), __ATOMIC_RELAXED);
        uint64_t start = d->last_tx_end > now ? d->last_tx_end : now;
        tx_end = start + (uint64_t)len * 8ull * 1000000000ull / c->rate_bps;
        __atomic_store_n(&d->last_tx_end, tx_end, __ATOMIC_RELAXED);
        d->txq[(d->txhead + d->txcount) % d->txcap] = tx_end;
        d->txcount++;
    }
    uint64_t deliver = tx_end + c->delay_ns;
    if (c->jitter_ns) {
        int64_t j = (int64_t)(splitmix(&d->rng) % (2 * c->jitter_ns + 1)) - (int64_t)c->jitter_ns;
        deliver = (int64_t)deliver + j > (int64_t)tx_end ? deliver + j : tx_end;
    }
    if (deliver < d->last_deliver) deliver = d->last_deliver; /* FIFO: never reorder */
    d->last_deliver = deliver;
    return deliver;
}

static void poke(int fd) {
    uint64_t one = 1;
    if (write(fd, &one, sizeof one) < 0) { /* counter saturated: already poked */ }
}

static void drain(int fd) {
    uint64_t v;
    if (read(fd, &v, sizeof v) < 0) { /* nothing pending */ }
}

static void take_cfg(struct dir *d, uint64_t *seen, struct cfg *out) {
    pthread_mutex_lock(&d->mu);
    *out = d->pending;
    *seen = d->gen;
    pthread_mutex_unlock(&d->mu);
}

static void *run_reader(void *arg) {
    struct dir *d = arg;
    for (;;) {
        if (__atomic_load_n(&d->gen, __ATOMIC_ACQUIRE) != d->seen_gen) {
            struct cfg c;
            take_cfg(d, &d->seen_gen, &c);
            apply_queue(d, &c);
        }
        struct pollfd pfd[2] = {{.fd = d->in_fd, .events = POLLIN}, {.fd = d->wake_r, .events = POLLIN}};
        int r = poll(pfd, 2, -1);
        if (r < 0 && errno != EINTR) die("poll");
        if (r > 0 && (pfd[1].revents & POLLIN)) {
            drain(d->wake_r);
            continue; /* apply the new config before reading more packets */
        }
        if (r <= 0 || !(pfd[0].revents & POLLIN)) continue;
        for (int i = 0; i < BATCH; i++) {
            size_t tail = d->in_tail;
            while (tail - __atomic_load_n(&d->in_head, __ATOMIC_ACQUIRE) >= INBOX) {
                poke(d->data_fd); /* full: let the writer catch up */
                struct timespec ts = {0, 20000};
                nanosleep(&ts, NULL);
            }
            struct slot *sl = &d->inbox[tail & (INBOX - 1)];
            ssize_t n = read(d->in_fd, sl->data, sizeof sl->data);
            if (n <= 0) break;
            sl->len = (uint32_t)n;
            uint64_t deliver = admit(d, (uint32_t)n, now_ns());
            if (!deliver) continue;
            sl->deliver_ns = deliver;
            __atomic_store_n(&d->in_tail, tail + 1, __ATOMIC_RELEASE);
            /* the writer needs waking only when it sleeps with nothing scheduled (a new
               packet is never due before those it already holds) or when it falls behind */
            if (__atomic_exchange_n(&d->writer_idle, 0, __ATOMIC_ACQ_REL) ||
                tail + 1 - __atomic_load_n(&d->in_head, __ATOMIC_ACQUIRE) >= INBOX / 2)
                poke(d->data_fd);
        }
    }
    return NULL;
}

static void *run_writer(void *arg) {
    struct dir *d = arg;
    for (;;) {
        if (__atomic_load_n(&d->gen, __ATOMIC_ACQUIRE) != d->w_seen_gen) {
            struct cfg c;
            take_cfg(d, &d->w_seen_gen, &c);
            apply_ring(d, &c);
        }
        /* move what the reader admitted into the delay line */
        size_t head = d->in_head, tail = __atomic_load_n(&d->in_tail, __ATOMIC_ACQUIRE);
        for (; head != tail; head++) {
            const struct slot *src = &d->inbox[head & (INBOX - 1)];
            if (d->count >= d->cap) {
                d->drop_overflow++;
                continue;
            }
            struct slot *dst = &d->ring[(d->head + d->count) % d->cap];
            dst->deliver_ns = src->deliver_ns;
            dst->len = src->len;
            memcpy(dst->data, src->data, src->len);
            d->count++;
        }
        __atomic_store_n(&d->in_head, head, __ATOMIC_RELEASE);
        uint64_t now = now_ns();
        while (d->count && d->ring[d->head].deliver_ns <= now + SLACK_NS) {
            struct slot *sl = &d->ring[d->head];
            if (write(d->out_fd, sl->data, sl->len) < 0) d->write_err++;
            else { d->tx_pkts++; d->tx_bytes += sl->len; }
            d->head = (d->head + 1) % d->cap;
            d->count--;
        }
        struct pollfd pfd[2] = {{.fd = d->data_fd, .events = POLLIN}, {.fd = d->wake_w, .events = POLLIN}};
        struct timespec ts, *tsp = NULL;
        uint64_t want_wake = 0;
        if (d->count) {
            uint64_t due = d->ring[d->head].deliver_ns;
            uint64_t wait = due > now + (uint64_t)d->lead_ns ? due - now - (uint64_t)d->lead_ns : 0;
            want_wake = now + wait;
            ts.tv_sec = (time_t)(wait / 1000000000ull);
            ts.tv_nsec = (long)(wait % 1000000000ull);
            tsp = &ts;
        } else {
            __atomic_store_n(&d->writer_idle, 1, __ATOMIC_RELEASE);
            if (__atomic_load_n(&d->in_tail, __ATOMIC_ACQUIRE) != head) { /* raced with the reader */
                __atomic_store_n(&d->writer_idle, 0, __ATOMIC_RELEASE);
                continue;
            }
        }
        int r = ppoll(pfd, 2, tsp, NULL);
        if (r < 0 && errno != EINTR) die("ppoll");
        if (r == 0 && want_wake) { /* a timer wake-up: learn how late it was */
            int64_t late = (int64_t)(now_ns() - want_wake);
            if (late > MAX_LEAD_NS) late = MAX_LEAD_NS;
            d->lead_ns += (late - d->lead_ns) / 4;
            if (d->lead_ns < 0) d->lead_ns = 0;
        }
        if (r > 0 && (pfd[0].revents & POLLIN)) drain(d->data_fd);
        if (r > 0 && (pfd[1].revents & POLLIN)) drain(d->wake_w);
    }
    return NULL;
}

static int parse_cfg(const char *s, struct cfg *c) {
    unsigned long long a, b, r, l, q;
    if (sscanf(s, "%llu %llu %llu %llu %llu", &a, &b, &r, &l, &q) != 5) return -1;
    if (q < 1) q = 1;
    *c = (struct cfg){a, b, r, l, q};
    return 0;
}

static void set_dir(struct dir *d, const struct cfg *c) {
    pthread_mutex_lock(&d->mu);
    d->pending = *c;
    __atomic_add_fetch(&d->gen, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&d->mu);
    poke(d->wake_r);
    poke(d->wake_w);
}

static void write_stats(const char *path) {
    if (!path) return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fprintf(f, "{");
    uint64_t now = now_ns();
    for (int i = 0; i < 2; i++) {
        struct dir *d = &dirs[i];
        /* how long the serializer stays busy with what is queued: > 0 means a backlog */
        uint64_t last = __atomic_load_n(&d->last_tx_end, __ATOMIC_RELAXED);
        fprintf(f,
                "%s\"%s\": {\"rx_pkts\": %llu, \"rx_bytes\": %llu, \"tx_pkts\": %llu, \"tx_bytes\": %llu, "
                "\"drop_loss\": %llu, \"drop_queue\": %llu, \"drop_overflow\": %llu, \"write_err\": %llu, "
                "\"backlog_ns\": %llu, \"idle_ns\": %llu}",
                i ? ", " : "", d->name, (unsigned long long)d->rx_pkts, (unsigned long long)d->rx_bytes,
                (unsigned long long)d->tx_pkts, (unsigned long long)d->tx_bytes,
                (unsigned long long)d->drop_loss, (unsigned long long)d->drop_queue,
                (unsigned long long)d->drop_overflow, (unsigned long long)d->write_err,
                (unsigned long long)(last > now ? last - now : 0),
                (unsigned long long)(__atomic_load_n(&d->idle_ns, __ATOMIC_RELAXED) +
                                     (last && last < now ? now - last : 0)));
    }
    fprintf(f, "}\n");
    fclose(f);
    rename(tmp, path);
}

static void on_signal(int sig) { (void)sig; stopping = 1; }

static void usage(void) {
    fprintf(stderr,
            "usage: ndlink NS_A DEV_A NS_B DEV_B MTU SEED CTL_FIFO STATS_FILE 'AB_CFG' 'BA_CFG'\n"
            "  CFG = DELAY_NS JITTER_NS RATE_BPS LOSS_PPB QUEUE_PKTS\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc != 11) usage();
    const char *ctl = argv[7], *stats = argv[8];
    const char *rt = getenv("NDLINK_RT_PRIO");
    int rt_prio = rt ? atoi(rt) : 0;
    int mtu = atoi(argv[5]);
    uint64_t seed = strtoull(argv[6], NULL, 10);
    struct cfg ab, ba;
    if (parse_cfg(argv[9], &ab) || parse_cfg(argv[10], &ba)) usage();
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* ppoll wakes within ~us, not the default 50 us slack */
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int fa = open_tun(argv[1], argv[2], mtu);
    int fb = open_tun(argv[3], argv[4], mtu);
    dirs[0] = (struct dir){.name = "ab", .in_fd = fa, .out_fd = fb, .rng = seed * 2 + 1};
    dirs[1] = (struct dir){.name = "ba", .in_fd = fb, .out_fd = fa, .rng = seed * 2 + 2};
    for (int i = 0; i < 2; i++) {
        struct dir *d = &dirs[i];
        pthread_mutex_init(&d->mu, NULL);
        d->wake_r = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        d->wake_w = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        d->data_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (d->wake_r < 0 || d->wake_w < 0 || d->data_fd < 0) die("eventfd");
        d->inbox = malloc(INBOX * sizeof *d->inbox);
        if (!d->inbox) die("malloc inbox");
        apply_queue(d, i ? &ba : &ab);
        apply_ring(d, i ? &ba : &ab);
    }
    int cfd = open(ctl, O_RDWR | O_NONBLOCK | O_CLOEXEC); /* RDWR: never sees EOF when writers go */
    if (cfd < 0) die(ctl);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, 256 * 1024);
        if (pthread_create(&th[i], &at, i < 2 ? run_reader : run_writer, &dirs[i % 2]) != 0)
            die("pthread_create");
        if (rt_prio > 0) {
            /* real-time: a delivery is late only by the wake-up itself, not by waiting for
               a time slice behind the lab's own iperf3s and nodes (kernel RT throttling keeps
               5 % of each CPU for everything else) */
            struct sched_param sp = {.sched_priority = rt_prio};
            if (pthread_setschedparam(th[i], SCHED_FIFO, &sp) != 0)
                fprintf(stderr, "ndlink: SCHED_FIFO not available, timing may suffer under load\n");
        }
    }
    write_stats(stats); /* exists from the start: readers never race the first second */
    printf("ready\n");
    fflush(stdout);

    char buf[4096];
    size_t used = 0;
    uint64_t next_stats = now_ns();
    while (!stopping) {
        struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = cfd, .events = POLLIN}};
        int r = poll(p, 2, 1000);
        if (r < 0 && errno != EINTR) die("poll");
        if (p[0].revents & (POLLHUP | POLLERR | POLLIN)) {
            char junk[64];
            if (read(0, junk, sizeof junk) <= 0) break; /* supervisor gone */
        }
        if (p[1].revents & POLLIN) {
            ssize_t n = read(cfd, buf + used, sizeof buf - 1 - used);
            if (n > 0) used += (size_t)n;
            buf[used] = 0;
            char *line = buf, *nl;
            while ((nl = strchr(line, '\n'))) {
                *nl = 0;
                struct cfg c;
                if (strncmp(line, "ab ", 3) == 0 && parse_cfg(line + 3, &c) == 0) set_dir(&dirs[0], &c);
                else if (strncmp(line, "ba ", 3) == 0 && parse_cfg(line + 3, &c) == 0) set_dir(&dirs[1], &c);
                else if (strcmp(line, "stats") == 0) write_stats(stats);
                else if (*line) fprintf(stderr, "ndlink: bad control line: %s\n", line);
                line = nl + 1;
            }
            used = strlen(line);
            memmove(buf, line, used);
            if (used >= sizeof buf - 1) used = 0;
        }
        uint64_t t = now_ns();
        if (t >= next_stats) {
            write_stats(stats);
            next_stats = t + 1000000000ull;
        }
    }
    write_stats(stats);
    return 0;
}
