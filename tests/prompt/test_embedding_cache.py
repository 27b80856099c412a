"""segflow.prompt.cache.EmbeddingCache: byte-bounded LRU, counters, thread safety."""

from __future__ import annotations

import threading

from segflow.prompt.cache import EmbeddingCache


def test_lru_evicts_oldest_to_fit_and_counts() -> None:
    cache = EmbeddingCache(max_bytes=100)
    assert cache.put("a", "A", 40) and cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # a is now the most recent
    assert cache.put("c", "C", 40)  # 120 > 100: evicts b, the least recently used
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.nbytes == 80 and cache.evictions == 1
    assert cache.get("b") is None
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.put("d", "D", 100)  # needs the whole budget
    assert len(cache) == 1 and cache.nbytes == 100 and cache.evictions == 3
    assert not cache.put("e", "E", 101)  # larger than the budget: not kept, nothing evicted
    assert len(cache) == 1 and "d" in cache
    assert cache.put("d", "D2", 10) and cache.nbytes == 10  # replacing re-accounts
    assert cache.stats() == {
        "entries": 1,
        "nbytes": 10,
        "max_bytes": 100,
        "hits": 1,
        "misses": 1,
        "evictions": 3,
    }


def test_threads_keep_the_byte_count_exact() -> None:
    cache = EmbeddingCache(max_bytes=1000)

    def work(offset: int) -> None:
        for i in range(500):
            key = f"k{(offset + i) % 37}"
            if cache.get(key) is None:
                cache.put(key, i, 7 + (offset + i) % 37)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.hits + cache.misses == 8 * 500
    assert cache.nbytes <= 1000
    assert cache.nbytes == sum(size for _, size in cache._items.values())
