/** Schedules as GET /api/schedules answers them: the REST types of protocol/rest.ts. */
export type { ScheduleCalendar as CalendarView, ScheduleFire as FireView, ScheduleHistory as History, ScheduleView } from '../../../../protocol/rest';
