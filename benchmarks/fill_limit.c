/*
 * fill_limit.c: the fill-to-limit scenario against the live kernel.
 *
 *   usage: fill_limit NPAGES
 *
 * 1. mmap one PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE region of NPAGES.
 * 2. mprotect(page 2k+1, PROT_READ) for k = 0, 1, ... until a call fails (ENOMEM at
 *    map_count >= max_map_count - 1: each middle split costs 2 VMAs, see split_vma() in mm/vma.c).
 * 3. read /proc/self/maps once (map_count = lines - 1: [vsyscall] is the gate VMA, not counted).
 * 4. munmap every page that was made read-only (whole 1-page VMAs: never fails on the count).
 * 5. munmap the whole region.
 *
 * Every phase is timed with clock_gettime(CLOCK_MONOTONIC) (vDSO, no syscall, no mapping), and
 * each mprotect of phase 2 is timed on its own. Nothing here allocates while the count is being
 * driven: buffers are static (.bss is mapped at exec), and stdio is only used at the very end,
 * so the process's own map_count moves only by the calls under test.
 * Output: one JSON object on stdout. Exit status 0 on success, 1 on an unexpected failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAGES (1L << 21)
#define MAX_CALLS (MAX_PAGES / 2 + 1)

static char maps_buf[32 << 20]; /* /proc/self/maps at 65k VMAs is ~5 MiB */
static uint64_t split_ns[MAX_CALLS];

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* map_count as the kernel counts it: lines of /proc/self/maps minus the gate VMA. */
static long map_count(size_t *bytes)
{
	size_t n = 0;
	long lines = 0;
	ssize_t k;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	while ((k = read(fd, maps_buf + n, sizeof(maps_buf) - n)) > 0)
		n += (size_t)k;
	close(fd);
	if (k < 0 || n == sizeof(maps_buf))
		return -1;
	for (size_t i = 0; i < n; i++)
		lines += maps_buf[i] == '\n';
	if (bytes)
		*bytes = n;
	return lines - 1;
}

static long read_max_map_count(void)
{
	char buf[32] = { 0 };
	int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
	ssize_t k;

	if (fd < 0)
		return -1;
	k = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return k > 0 ? strtol(buf, NULL, 10) : -1;
}

int main(int argc, char **argv)
{
	const long page = sysconf(_SC_PAGESIZE);
	long npages = argc > 1 ? strtol(argv[1], NULL, 10) : 1L << 17;
	long before_mmap, after_mmap, at_limit, after_unmap, after_teardown, ok = 0;
	size_t maps_bytes = 0;
	uint64_t t0, t_mmap, t_fill, t_maps, t_unmap, t_teardown;
	int fill_errno = 0;
	char *base;

	if (npages < 4 || npages > MAX_PAGES) {
		fprintf(stderr, "fill_limit: NPAGES must be in [4, %ld]\n", MAX_PAGES);
		return 1;
	}
	before_mmap = map_count(NULL);

	t0 = now_ns();
	base = mmap(NULL, (size_t)npages * page, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	t_mmap = now_ns() - t0;
	if (base == MAP_FAILED) {
		perror("fill_limit: mmap");
		return 1;
	}
	after_mmap = map_count(NULL);

	/* Phase 2: per-call timestamps; the last (failing) call is timed too. */
	t0 = now_ns();
	for (long k = 0; 2 * k + 1 < npages; k++) {
		uint64_t s = now_ns();
		int r = mprotect(base + (2 * k + 1) * page, page, PROT_READ);

		split_ns[k] = now_ns() - s;
		if (r) {
			fill_errno = errno;
			break;
		}
		ok++;
	}
	t_fill = now_ns() - t0;

	t0 = now_ns();
	at_limit = map_count(&maps_bytes);
	t_maps = now_ns() - t0;

	t0 = now_ns();
	for (long k = 0; k < ok; k++) {
		if (munmap(base + (2 * k + 1) * page, page)) {
			perror("fill_limit: munmap");
			return 1;
		}
	}
	t_unmap = now_ns() - t0;
	after_unmap = map_count(NULL);

	t0 = now_ns();
	if (munmap(base, (size_t)npages * page)) {
		perror("fill_limit: munmap whole");
		return 1;
	}
	t_teardown = now_ns() - t0;
	after_teardown = map_count(NULL);

	printf("{\"page_size\": %ld, \"npages\": %ld, \"max_map_count\": %ld,\n", page, npages,
	       read_max_map_count());
	printf(" \"map_count\": {\"before_mmap\": %ld, \"after_mmap\": %ld, \"at_limit\": %ld,"
	       " \"after_unmap\": %ld, \"after_teardown\": %ld},\n",
	       before_mmap, after_mmap, at_limit, after_unmap, after_teardown);
	printf(" \"fill_errno\": \"%s\",\n", fill_errno ? strerrorname_np(fill_errno) : "");
	printf(" \"phases\": {\"mmap\": {\"calls\": 1, \"ns\": %llu},"
	       " \"fill\": {\"calls\": %ld, \"ns\": %llu},"
	       " \"maps\": {\"calls\": 1, \"ns\": %llu, \"bytes\": %zu},"
	       " \"unmap\": {\"calls\": %ld, \"ns\": %llu},"
	       " \"teardown\": {\"calls\": 1, \"ns\": %llu}},\n",
	       (unsigned long long)t_mmap, ok + (fill_errno != 0), (unsigned long long)t_fill,
	       (unsigned long long)t_maps, maps_bytes, ok, (unsigned long long)t_unmap,
	       (unsigned long long)t_teardown);
	printf(" \"split_ns\": [");
	for (long k = 0; k < ok; k++)
		printf(k ? ",%llu" : "%llu", (unsigned long long)split_ns[k]);
	printf("]}\n");
	return fill_errno == ENOMEM ? 0 : 1;
}
