#include "serve_http.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

namespace ovseg::cli::serve {
namespace {

int local_port(int fd) {
  sockaddr_storage a{};
  socklen_t n = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n) != 0) return -1;
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&a)->sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&a)->sin6_port);
  return -1;
}

// The open descriptors of this process that are sockets.
std::vector<int> open_sockets() {
  std::vector<int> out;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return out;
  const int own = ::dirfd(d);
  while (const dirent* e = ::readdir(d)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == own) continue;
    struct ::stat st {};
    if (::fstat(static_cast<int>(fd), &st) == 0 && S_ISSOCK(st.st_mode)) out.push_back(static_cast<int>(fd));
  }
  ::closedir(d);
  return out;
}

}  // namespace

std::string peer_name(int fd) {
  sockaddr_storage a{};
  socklen_t n = sizeof a;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &n) != 0) return {};
  char host[INET6_ADDRSTRLEN] = {0};
  int port = 0;
  if (a.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<sockaddr_in*>(&a);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<sockaddr_in6*>(&a);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
  } else {
    return {};
  }
  return std::string(host) + ":" + std::to_string(port);
}

ConnectionPool::ConnectionPool(int port, std::size_t threads, std::chrono::milliseconds request_timeout)
    : port_(port), timeout_(request_timeout) {
  for (std::size_t i = 0; i < threads; ++i)
    threads_.emplace_back([this] {
      for (;;) {
        std::function<void()> fn;
        {
          std::unique_lock<std::mutex> lock(mutex_);
          cond_.wait(lock, [this] { return shutdown_ || !jobs_.empty(); });
          if (jobs_.empty()) return;  // shut down and nothing left
          fn = std::move(jobs_.front());
          jobs_.pop_front();
        }
        fn();
      }
    });
  watchdog_ = std::thread([this] { watchdog(); });
}

ConnectionPool::~ConnectionPool() { shutdown(); }

int ConnectionPool::track_new_connection() {
  // Called on the accepting thread right after accept(): the connected socket on our port whose
  // peer is not the one recorded for its descriptor is the new one (a descriptor number is reused
  // as soon as an earlier connection closed it).
  int found = -1;
  for (int fd : open_sockets()) {
    if (local_port(fd) != port_) continue;
    const std::string peer = peer_name(fd);
    if (peer.empty()) continue;  // the listening socket
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = conns_.find(fd);
    if (it != conns_.end() && it->second.peer == peer) continue;
    Conn c;
    c.peer = peer;
    c.generation = next_generation_++;
    c.phase_start = std::chrono::steady_clock::now();
    conns_[fd] = c;
    found = fd;
  }
  return found;
}

void ConnectionPool::enqueue(std::function<void()> fn) {
  const int fd = track_new_connection();
  std::uint64_t generation = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (fd >= 0) generation = conns_[fd].generation;
    jobs_.push_back([this, fd, generation, fn = std::move(fn)] {
      fn();  // serves the connection, then closes its socket
      if (fd >= 0) forget(fd, generation);
    });
  }
  cond_.notify_one();
}

void ConnectionPool::forget(int fd, std::uint64_t generation) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = conns_.find(fd);
  if (it != conns_.end() && it->second.generation == generation) conns_.erase(it);
}

void ConnectionPool::close_idle(std::chrono::milliseconds grace) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  for (auto& [fd, c] : conns_)
    if (c.handlers == 0 && !c.shut && now - c.phase_start >= grace && peer_name(fd) == c.peer) {
      ::shutdown(fd, SHUT_RDWR);
      c.shut = true;
    }
}

void ConnectionPool::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    shutdown_ = true;
  }
  cond_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    watchdog_stop_ = true;
  }
  watchdog_cond_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
}

void ConnectionPool::watchdog() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!watchdog_cond_.wait_for(lock, std::chrono::milliseconds(200), [this] { return watchdog_stop_; })) {
    const auto now = std::chrono::steady_clock::now();
    for (auto& [fd, c] : conns_) {
      if (c.handlers > 0 || c.shut || now - c.phase_start < timeout_) continue;
      // Still the same connection (its descriptor was not closed and reused meanwhile)?
      if (peer_name(fd) != c.peer) continue;
      ::shutdown(fd, SHUT_RDWR);  // the blocked read returns; httplib closes the connection
      c.shut = true;
      ++timed_out_;
    }
  }
}

int ConnectionPool::socket_of(const httplib::Request& req) const {
  const std::string peer = req.remote_addr + ":" + std::to_string(req.remote_port);
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [fd, c] : conns_)
    if (c.peer == peer) return fd;
  return -1;
}

bool ConnectionPool::peer_closed(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, static_cast<short>(POLLRDHUP | POLLIN), 0};
  if (::poll(&p, 1, 0) < 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
  if (p.revents & POLLIN) {  // data (a pipelined request) or end of stream
    char c;
    const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0;
  }
  return false;
}

ConnectionPool::HandlerScope::HandlerScope(ConnectionPool& pool, int fd) : pool_(pool), fd_(fd) {
  std::lock_guard<std::mutex> lock(pool_.mutex_);
  auto it = pool_.conns_.find(fd_);
  if (it != pool_.conns_.end()) ++it->second.handlers;
}

ConnectionPool::HandlerScope::~HandlerScope() {
  std::lock_guard<std::mutex> lock(pool_.mutex_);
  auto it = pool_.conns_.find(fd_);
  if (it != pool_.conns_.end() && it->second.handlers > 0) {
    --it->second.handlers;
    it->second.phase_start = std::chrono::steady_clock::now();
  }
}

std::size_t ConnectionPool::connections() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return conns_.size();
}

std::uint64_t ConnectionPool::timed_out() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return timed_out_;
}

}  // namespace ovseg::cli::serve
