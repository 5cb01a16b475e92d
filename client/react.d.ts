// Type declarations for react.js, the React bindings of live.js.

import type { ReactNode } from "react";
import type { QueryFunctionContext, UseQueryOptions, UseQueryResult, UseMutateFunction } from "@tanstack/react-query";
import type { Connection, Ending, Live, LiveError, LiveOptions, Member, Merge, Meta, Presence, SubscribeOptions, Transport } from "./live.js";

export { LiveError } from "./live.js";
export type { Ending, Member };

export interface LiveProviderProps {
  children?: ReactNode;
  /** The WebSocket URL (live.js's url). Changing it reconnects; channels resume from their cursors. */
  url?: string;
  /** The SSE URL (live.js's sseURL). Changing it reconnects. */
  sseURL?: string;
  /** "auto" (default), "websocket", "sse" or "poll". Changing it reconnects. */
  transport?: Transport;
  /** live.js's other options, read when the connection is made. */
  options?: LiveOptions;
  /** A connection made with createLive, used instead of making one; the provider does not close it. */
  client?: Live;
  /** Errors the hub reports, and publishes that failed. */
  onError?: (err: LiveError) => void;
}

/** Connects the page to a hub for its children; needs a QueryClientProvider above it. */
export function LiveProvider(props: LiveProviderProps): ReactNode;

/** What useLive returns. */
export interface LiveContextValue {
  /** The LiveProvider pattern's LiveConnection, {status, reconnectAttempt}, with the transport, whether updates are delayed, and the last ending the server decided (connection.ending). */
  connection: Connection;
  /** Connects again after a final ending ("removed", "signed-out"), once the user has logged in again, say. */
  connect(): void;
  /** Calls callback for each publication on channel; returns the unsubscribe function, safe to call at any time. */
  subscribe<T = any>(channel: string, callback: (data: T, meta: Meta) => void, opts?: SubscribeOptions): () => void;
  /** Publishes on channel; resolves with its cursor. Failures also reach LiveProvider's onError. */
  publish(channel: string, data: unknown, opts?: { timeout?: number }): Promise<string>;
  /** connection.transport, once connected. */
  transport: Connection["transport"] | null;
}

export function useLive(): LiveContextValue;

export interface UseLiveDataOptions<T> extends Omit<UseQueryOptions<T, Error, T, any>, "queryKey" | "queryFn"> {
  channel: string;
  queryKey: readonly unknown[];
  /** Fetches the whole value. */
  fetcher: (ctx: QueryFunctionContext) => Promise<T>;
  /** Folds a publication into the value. Default mergeShallow ({...current, ...update}). Should be idempotent. */
  merge?: Merge<T, any>;
  /** How long the first fetch waits for the subscription, in ms. Default 3000. */
  subscribeTimeout?: number;
  /** Refused subscriptions and failed merges. */
  onError?: (err: Error) => void;
}

export function useLiveData<T = any>(options: UseLiveDataOptions<T>): UseQueryResult<T, Error> & { isLive: boolean };

export interface UseDeltaSyncOptions extends Omit<UseQueryOptions<any, Error, any, any>, "queryKey" | "queryFn"> {
  onError?: (err: Error) => void;
  /** Where patch() PATCHes: the State's URL. */
  url?: string;
  /** As useLiveList's. */
  offline?: boolean;
  persist?: boolean | string;
}

export function useDeltaSync<T = any>(
  queryKey: readonly unknown[],
  channel: string,
  initialFetcher: () => Promise<{ data: T; version: number }>,
  options?: UseDeltaSyncOptions,
): UseQueryResult<T, Error> & {
  version: number;
  isLive: boolean;
  /** Patches the server has not settled yet: in flight, or kept while offline. */
  pending: number;
  /** Shows a JSON merge patch at once and PATCHes it to options.url (Hub.State's handler); kept and sent again when offline. */
  patch(changes: Partial<T>, opts?: { ifMatch?: string | number; timeout?: number }): Promise<{ data: T; version: number }>;
};

export interface UseLiveListOptions<T> {
  /** Where POST adds. Default "/api/" + channel. */
  url?: string;
  /** An item's URL, for PATCH and DELETE. Default url + "/" + id. */
  itemURL?: (id: any) => string;
  /** The id member of items. Default "id". */
  idField?: string;
  /** Extra request headers. */
  headers?: Record<string, string>;
  /** Request timeout in ms; a mutation that times out is rolled back. Default 10000. */
  timeout?: number;
  /** Keep writes that fail on the way and send them again once back (default true); see live.js's liveList. */
  offline?: boolean;
  /** Keep waiting writes in localStorage across reloads: true (default), false, or the storage key. */
  persist?: boolean | string;
  /** The If-Match to send with an update; a 409 or 412 answer rolls back and refetches. */
  ifMatch?: (item: Partial<T>) => string | undefined;
  fetch?: (url: string, init: RequestInit) => Promise<Response>;
  /** Failed loads and mutations. */
  onError?: (err: Error) => void;
}

export type Optimistic<T> = T & { _optimistic?: true };

export interface UseLiveListResult<T> {
  items: Array<Optimistic<T>>;
  isLoading: boolean;
  error: Error | null;
  add: UseMutateFunction<T, Error, Partial<T>>;
  /** The item with its id and the members to change. */
  update: UseMutateFunction<T | undefined, Error, Partial<T>>;
  remove: UseMutateFunction<unknown, Error, any>;
  addAsync: (item: Partial<T>) => Promise<T>;
  updateAsync: (item: Partial<T>) => Promise<T | undefined>;
  removeAsync: (id: any) => Promise<unknown>;
  isAdding: boolean;
  isUpdating: boolean;
  isRemoving: boolean;
  /** Mutations the server has not settled yet: in flight, or kept while offline. */
  pending: number;
  /** Loads afresh, pending mutations kept. */
  refetch: () => Promise<void>;
}

export function useLiveList<T extends object = Record<string, any>>(
  channel: string,
  queryKey: readonly unknown[],
  fetcher?: () => Promise<T[]>,
  options?: UseLiveListOptions<T>,
): UseLiveListResult<T>;

/** A presence channel's members and count (as Live.members gives them), and whether they came yet. */
export interface PresenceState<Info = unknown> extends Pick<Presence<Info>, "members" | "count"> {
  /** The hub has sent the channel's presence. */
  ready: boolean;
}

export interface UsePresenceOptions<Info = unknown> {
  /** Who is here, after each change, as Live.presence gives it. */
  onChange?: (p: Presence<Info>) => void;
  onError?: (err: LiveError) => void;
}

/**
 * Follows who is subscribed to a presence channel. Info is the shape of
 * the record the server's Identify gives each user (Member.info):
 * usePresence<{ name: string }>("room").
 */
export function usePresence<Info = unknown>(channel: string, options?: UsePresenceOptions<Info>): PresenceState<Info>;
