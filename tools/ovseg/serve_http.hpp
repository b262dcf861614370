// The connections of `ovseg serve`: the threads that serve them (an httplib TaskQueue), a deadline
// for reading each request, and a way for a handler to learn that its client went away.
//
// cpp-httplib (0.11) times out each read, not a whole request: a client that sends a byte every
// few seconds (slowloris) or a header that never ends would hold a connection thread for as long
// as it likes. So the pool finds each connection's socket when it is accepted, and a watchdog shuts
// down any connection whose request has not been read within `request_timeout` (the time a
// handler runs does not count: a segmentation may take minutes on a CPU). The inference worker is
// never one of these threads, so no client can hold it; only its own request's handler waits on it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

namespace ovseg::cli::serve {

class ConnectionPool : public httplib::TaskQueue {
 public:
  // `port`: the server's listening port (connections are the sockets whose local port it is).
  ConnectionPool(int port, std::size_t threads, std::chrono::milliseconds request_timeout);
  ~ConnectionPool() override;

  void enqueue(std::function<void()> fn) override;
  void shutdown() override;

  // Shuts down every connection that is not inside a handler and whose last handler returned
  // more than `grace` ago (idle keep-alive ones, half-read requests; a response just handed back
  // is still being written): on exit, so that joining the threads does not wait for them.
  void close_idle(std::chrono::milliseconds grace);

  // The socket of the request's connection, -1 when unknown.
  int socket_of(const httplib::Request& req) const;
  // Whether the client of this socket closed its end (or the socket is gone).
  static bool peer_closed(int fd);

  // While a handler runs, its connection's deadline is off; it starts again when the handler
  // returns (for the next request on a kept-alive connection).
  class HandlerScope {
   public:
    HandlerScope(ConnectionPool& pool, int fd);
    ~HandlerScope();
    HandlerScope(const HandlerScope&) = delete;
    HandlerScope& operator=(const HandlerScope&) = delete;

   private:
    ConnectionPool& pool_;
    int fd_;
  };

  std::size_t connections() const;
  std::uint64_t timed_out() const;

 private:
  struct Conn {
    std::string peer;  // "addr:port"
    std::uint64_t generation = 0;
    std::chrono::steady_clock::time_point phase_start;
    int handlers = 0;
    bool shut = false;
  };
  int track_new_connection();  // the socket just accepted (-1: none found)
  void forget(int fd, std::uint64_t generation);
  void watchdog();

  const int port_;
  const std::chrono::milliseconds timeout_;
  mutable std::mutex mutex_;
  std::condition_variable cond_;           // the pool's threads: a job, or shut down
  std::condition_variable watchdog_cond_;  // the watchdog: stop
  std::list<std::function<void()>> jobs_;
  std::map<int, Conn> conns_;
  std::uint64_t next_generation_ = 1;
  std::uint64_t timed_out_ = 0;
  bool shutdown_ = false;
  bool watchdog_stop_ = false;
  std::vector<std::thread> threads_;
  std::thread watchdog_;
};

// What httplib is given as its task queue: forwards to a pool that the server owns (httplib
// deletes its queue when listen() returns; the pool must outlive that).
class ForwardingQueue : public httplib::TaskQueue {
 public:
  explicit ForwardingQueue(ConnectionPool* pool) : pool_(pool) {}
  void enqueue(std::function<void()> fn) override { pool_->enqueue(std::move(fn)); }
  void shutdown() override { pool_->shutdown(); }

 private:
  ConnectionPool* pool_;
};

// "addr:port" of a socket's peer; empty when it has none.
std::string peer_name(int fd);

}  // namespace ovseg::cli::serve
