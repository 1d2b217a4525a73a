#!/usr/bin/perl
# anyevent-fork.pl: Perl's AnyEvent::Fork in the spawn benchmark, the
# workload of its documentation's PERFORMANCE section, from a perl caller
# grown to -m MiB (a string of that many bytes, every byte written):
#
#   ae_new       AnyEvent::Fork->new->run ("CORE::exit"), then wait for the
#                child's socket to close (EOF), as PERFORMANCE does.  These
#                children are not ours to reap (the template's), so EOF is
#                all the caller can see of their end.
#   ae_new_exec  AnyEvent::Fork->new_exec->run ("CORE::exit"): a fresh perl
#                is exec'd each time; wait for the socket to close AND for
#                the exit status (AE::child: it is our own child).
#
# Cycles run one at a time; a slice is at least -n cycles and -t seconds.
# Output and commands are bench/spawn's (see bench/spawn-run.py):
#   perl bench/peers/anyevent-fork.pl -w -m MiB [-t s] [-n N] [-M list]
# Needs AnyEvent::Fork and EV (Debian: libanyevent-fork-perl libev-perl;
# `make bench-peers` installs them).
use strict;
use warnings;

use Getopt::Long qw(:config no_ignore_case bundling);
use Time::HiRes ();
use POSIX ();
use EV;
use AnyEvent;
use AnyEvent::Fork;

my ($mib, $tmin, $nmin, $worker, $runs, $list) =
    (5, 0.5, 10, 0, 5, "ae_new,ae_new_exec");
GetOptions(
    "m=i" => \$mib, "t=f" => \$tmin, "n=i" => \$nmin, "w" => \$worker,
    "r=i" => \$runs, "M=s" => \$list,
) && !@ARGV && $mib >= 1 && $nmin >= 1 && $tmin >= 0
    or die "usage: anyevent-fork.pl [-w | -r runs] -m MiB [-t s] [-n N] "
         . "[-M ae_new,ae_new_exec]\n";

$| = 1;

sub now { Time::HiRes::clock_gettime(Time::HiRes::CLOCK_MONOTONIC()) }

# One cycle ends at EOF on the child's socket; with $pid also at its exit
# status.  Dies on anything unexpected.
sub wait_gone {
    my ($proc, $pid) = @_;
    my $cv = AE::cv;
    my ($status, $cw);

    $cv->begin;
    if (defined $pid) {
        $cv->begin;
        $cw = AE::child $pid, sub { $status = $_[1]; $cv->end };
    }
    $proc->run ("CORE::exit", sub {
        my $fh = shift or die "anyevent-fork.pl: run failed\n";
        my $w;
        $w = AE::io $fh, 0, sub {
            my $n = sysread $fh, my $buf, 1;
            return if !defined $n && ($!{EAGAIN} || $!{EINTR});
            die "anyevent-fork.pl: data or error on the child's socket\n"
                if $n || !defined $n;
            undef $w;
            close $fh;
            $cv->end;
        };
    });
    $cv->recv;
    die "anyevent-fork.pl: child $pid: wait status $status\n"
        if defined $pid && !POSIX::WIFEXITED ($status);
}

my %cycle = (
    ae_new      => sub { wait_gone (AnyEvent::Fork->new) },
    ae_new_exec => sub {
        my $proc = AnyEvent::Fork->new_exec;
        wait_gone ($proc, $proc->pid);
    },
);
my %gone = (ae_new => "eof", ae_new_exec => "eof+status");

my @use = split /,/, $list;
$cycle{$_} or die "anyevent-fork.pl: no method '$_'\n" for @use;

# The template behind ->new is made by the first ->new: make it now,
# while this process is small (it is a fresh perl either way).
wait_gone (AnyEvent::Fork->new);

# The caller's size: a string of -m MiB, every byte written.
my $t0 = now;
my $heap = "\x5a" x ($mib << 20);
my $grow = now - $t0;

sub slice {
    my ($m, $tmin, $nmin) = @_;
    my (@lat, $t);
    my $start = $t = now;

    while (@lat < $nmin || $t - $start < $tmin) {
        my $c0 = $t;
        $cycle{$m}->();
        $t = now;
        push @lat, $t - $c0;
    }
    my $secs = $t - $start;
    my $n = @lat;
    @lat = sort { $a <=> $b } @lat;
    # nearest rank, as bench/spawn
    my $q = sub { my $i = int ($_[0] * $n + 0.999999) - 1;
                  $lat[$i < 0 ? 0 : $i >= $n ? $n - 1 : $i] };
    ($n, $secs, $q->(0.50), $q->(0.99))
}

sub round {
    my ($run, $prefix) = @_;
    for my $i (0 .. $#use) {
        my $m = $use[($i + $run) % @use];
        my ($n, $secs, $p50, $p99) = slice ($m, $tmin, $nmin);
        printf "%s%s,%d,%d,%d,%.4f,%.1f,%.1f,%.1f,%.1f,%s\n", $prefix, $m,
            $mib, $run, $n, $secs, $n / $secs, $p50 * 1e6, $p99 * 1e6,
            $secs / $n * 1e6, $gone{$m};
    }
}

sub proc_kb {
    my ($file, $key) = @_;
    open my $f, "<", $file or return -1;
    while (<$f>) { return $1 if /^\Q$key\E:\s*(\d+)/ }
    -1
}

slice ($_, 0, 3) for @use;     # untimed warm-up

my $rss = proc_kb ("/proc/self/status", "VmRSS");
my $huge = proc_kb ("/proc/self/smaps_rollup", "AnonHugePages");
# a sample of every page, so the string is read back at the end
sub checksum { my $s = 0; $s += ord substr $heap, $_ << 12, 1
                   for 0 .. (length ($heap) >> 12) - 1; $s }

if ($worker) {
    printf "ready,%d,%d,%d,%.2f\n", $$, $rss, $huge, $grow;
    while (my $cmd = <STDIN>) {
        if ($cmd =~ /^run (\d+)/) {
            round ($1, "row,");
        } elsif ($cmd =~ /^quit/) {
            last;
        } else {
            die "anyevent-fork.pl: unknown command: $cmd";
        }
        print "done\n";
    }
    printf "bye,%x\n", checksum;
} else {
    printf "# perl caller: string of %d MiB, VmRSS %d kB\n", $mib, $rss;
    print "method,size_mib,run,spawns,seconds,spawns_per_s,p50_us,p99_us,"
        . "mean_us,gone\n";
    round ($_, "") for 1 .. $runs;
    printf "# checksum %x\n", checksum;
}
